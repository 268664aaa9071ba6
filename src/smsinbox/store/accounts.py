"""Accounts and the numbers they own."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import delete, exc, insert, select, update

from smsinbox.errors import AlreadyExists, InvalidState, NotFound
from smsinbox.models import Account, AccountStatus, AccountSummary
from smsinbox.store import tables as t
from smsinbox.store.base import (
    ACCOUNT_FIELDS,
    StoreBase,
    account_from_fields,
    account_id_for,
    claim_number,
)

# Built once: every poll looks its account up.
_ACCOUNT_BY_NAME = f"SELECT {ACCOUNT_FIELDS} FROM accounts WHERE username = ?"  # noqa: S608


class AccountStore(StoreBase):
    async def create_account(
        self,
        *,
        username: str,
        password_hash: str,
        status: AccountStatus,
        time_zone: str,
        reseller: str | None,
        msisdns: tuple[str, ...],
        now: int,
        region: str | None = None,
    ) -> Account:
        """Create an account with its numbers; all or nothing."""
        try:
            async with self.db.transaction("create_account") as connection:
                taken = await connection.scalar(
                    select(t.accounts.c.id).where(t.accounts.c.username == username)
                )
                if taken is not None:
                    raise AlreadyExists(f"an account named {username!r} already exists")
                account_id = await connection.scalar(
                    insert(t.accounts)
                    .values(
                        username=username,
                        password_hash=password_hash,
                        status=status.value,
                        time_zone=time_zone,
                        reseller=reseller,
                        region=region,
                        created_at=now,
                        password_changed_at=now,
                    )
                    .returning(t.accounts.c.id)
                )
                await connection.execute(insert(t.account_counters).values(account_id=account_id))
                for msisdn in msisdns:
                    await claim_number(connection, msisdn, int(account_id or 0), now)
        except exc.IntegrityError:
            # Lost a race with a concurrent create_account or add_number.
            raise AlreadyExists(
                f"account {username!r} or one of its numbers was just taken"
            ) from None
        account = await self.get_account(username)
        assert account is not None
        return account

    async def get_account(self, username: str) -> Account | None:
        # Every MC5 and EAPI poll looks its account up: driver level.
        row = await self.db.read_row("get_account", _ACCOUNT_BY_NAME, (username,))
        return None if row is None else account_from_fields(row)

    async def list_accounts(self) -> list[AccountSummary]:
        async with self.db.snapshot("list_accounts") as connection:
            rows = (await connection.execute(select(t.accounts).order_by(t.accounts.c.id))).all()
            owned = (
                await connection.execute(
                    select(t.numbers.c.account_id, t.numbers.c.msisdn).order_by(t.numbers.c.msisdn)
                )
            ).all()
        numbers_of: defaultdict[int, list[str]] = defaultdict(list)
        for account_id, msisdn in owned:
            numbers_of[account_id].append(msisdn)
        return [
            AccountSummary(
                username=row.username,
                status=AccountStatus(row.status),
                time_zone=row.time_zone,
                reseller=row.reseller,
                msisdns=tuple(numbers_of[row.id]),
                region=row.region,
            )
            for row in rows
        ]

    async def set_account_status(
        self, username: str, status: AccountStatus, *, only_from: AccountStatus | None = None
    ) -> None:
        """Change the status; with `only_from`, only an account in that status changes."""
        async with self.db.transaction("set_account_status") as connection:
            current = await connection.scalar(
                select(t.accounts.c.status).where(t.accounts.c.username == username)
            )
            if current is None:
                raise NotFound(f"no account named {username!r}")
            if only_from is not None and current != only_from.value:
                raise InvalidState(
                    f"{username} is {current}, not {only_from.value}: nothing changed"
                )
            await connection.execute(
                update(t.accounts)
                .where(t.accounts.c.username == username)
                .values(status=status.value)
            )

    async def set_account_region(self, username: str, region: str | None) -> None:
        """Set (or with None, clear) the region the account's numbers are read in."""
        async with self.db.transaction("set_account_region") as connection:
            account_id = await account_id_for(connection, username)
            await connection.execute(
                update(t.accounts).where(t.accounts.c.id == account_id).values(region=region)
            )

    async def set_password(self, username: str, password_hash: str, now: int) -> None:
        """Replace the password and end every auth token and browser session opened under
        the old one."""
        async with self.db.transaction("set_password") as connection:
            account_id = await account_id_for(connection, username)
            await connection.execute(
                update(t.accounts)
                .where(t.accounts.c.id == account_id)
                .values(password_hash=password_hash, password_changed_at=now)
            )
            for sessions in (t.auth_tokens, t.web_sessions):
                await connection.execute(
                    update(sessions)
                    .where(sessions.c.account_id == account_id)
                    .where(sessions.c.revoked_at.is_(None))
                    .values(revoked_at=now)
                )

    async def add_number(self, msisdn: str, username: str, now: int) -> None:
        async with self.db.transaction("add_number") as connection:
            account_id = await account_id_for(connection, username)
            await claim_number(connection, msisdn, account_id, now)

    async def remove_number(self, msisdn: str) -> None:
        async with self.db.transaction("remove_number") as connection:
            result = await connection.execute(delete(t.numbers).where(t.numbers.c.msisdn == msisdn))
            if result.rowcount == 0:
                raise NotFound(f"number {msisdn} is not assigned to any account")
