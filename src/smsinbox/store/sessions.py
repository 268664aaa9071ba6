"""Auth tokens: mysms sessions, issued at login and stored only as digests."""

from __future__ import annotations

from sqlalchemy import insert, update

from smsinbox.models import Account
from smsinbox.store import tables as t
from smsinbox.store.base import ACCOUNT_FIELDS, NUMBER_OWNER, StoreBase, account_from_fields

# Every mysms request after login runs these: driver level, where SQLAlchemy's snapshots,
# statements and rows had cost more than the look-ups themselves.
_LIVE_SESSION = (
    "SELECT account_id, api_key_id FROM auth_tokens"
    " WHERE token_hash = ? AND revoked_at IS NULL AND expires_at > ?"
)
_ACCOUNT = f"SELECT {ACCOUNT_FIELDS} FROM accounts WHERE id = ?"  # noqa: S608
_NUMBERS_OF = "SELECT msisdn FROM numbers WHERE account_id = ? ORDER BY msisdn"


class SessionStore(StoreBase):
    async def create_auth_token(
        self, account_id: int, api_key_id: int, token_hash: str, *, now: int, expires_at: int
    ) -> None:
        async with self.db.transaction("create_auth_token") as connection:
            await connection.execute(
                insert(t.auth_tokens).values(
                    account_id=account_id,
                    api_key_id=api_key_id,
                    token_hash=token_hash,
                    created_at=now,
                    expires_at=expires_at,
                )
            )

    async def find_auth_token(self, token_hash: str, *, now: int) -> tuple[int, int] | None:
        """(account id, api key id) of a live token with this digest."""
        row = await self.db.read_row("find_auth_token", _LIVE_SESSION, (token_hash, now))
        return None if row is None else (int(row[0]), int(row[1]))

    async def revoke_auth_token(self, token_hash: str, *, now: int) -> None:
        tokens = t.auth_tokens.c
        async with self.db.transaction("revoke_auth_token") as connection:
            await connection.execute(
                update(t.auth_tokens)
                .where(tokens.token_hash == token_hash)
                .where(tokens.revoked_at.is_(None))
                .values(revoked_at=now)
            )

    async def get_account_by_id(self, account_id: int) -> tuple[Account, tuple[str, ...]] | None:
        """The account and the numbers it owns."""
        async with self.db.driver_snapshot("get_account_by_id") as driver:
            row = await driver.fetchrow(_ACCOUNT, (account_id,))
            if row is None:
                return None
            numbers = await driver.fetch(_NUMBERS_OF, (account_id,))
        return account_from_fields(row), tuple(number for (number,) in numbers)

    async def find_account_by_number(self, msisdn: str) -> int | None:
        async with self.db.snapshot("find_account_by_number") as connection:
            account_id = await connection.scalar(NUMBER_OWNER, {"msisdn": msisdn})
        return None if account_id is None else int(account_id)
