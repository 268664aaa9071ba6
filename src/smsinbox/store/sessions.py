"""Auth tokens: mysms sessions, issued at login and stored only as digests."""

from __future__ import annotations

import dataclasses

from sqlalchemy import insert, update

from smsinbox.models import Account
from smsinbox.store import tables as t
from smsinbox.store.base import ACCOUNT_FIELDS, NUMBER_OWNER, StoreBase, account_from_fields

# Every mysms request after login looks its session up: driver level, where SQLAlchemy's
# snapshots, statements and rows had cost more than the look-ups themselves, and in one
# statement, a row per number the account owns (one row with no number if it owns none):
# the token, the account and its numbers had been three round trips to PostgreSQL.
_ACCOUNT_COLUMNS = ", ".join("a." + name.strip() for name in ACCOUNT_FIELDS.split(","))
_LIVE_SESSION = (
    f"SELECT n.msisdn, {_ACCOUNT_COLUMNS} FROM auth_tokens s"  # noqa: S608
    " JOIN accounts a ON a.id = s.account_id LEFT JOIN numbers n ON n.account_id = a.id"
    " WHERE s.token_hash = ? AND s.api_key_id = ? AND s.revoked_at IS NULL"
    " AND s.expires_at > ? ORDER BY n.msisdn"
)
_ACCOUNT = f"SELECT {ACCOUNT_FIELDS} FROM accounts WHERE id = ?"  # noqa: S608
_NUMBERS_OF = "SELECT msisdn FROM numbers WHERE account_id = ? ORDER BY msisdn"


@dataclasses.dataclass(frozen=True, slots=True)
class LiveSession:
    """The account a live auth token signs in, with the numbers it owns."""

    account: Account
    numbers: tuple[str, ...]


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

    async def find_session(
        self, token_hash: str, *, api_key_id: int, now: int
    ) -> LiveSession | None:
        """The session of a live token with this digest, issued to this API key."""
        rows = await self.db.read_rows("find_session", _LIVE_SESSION, (token_hash, api_key_id, now))
        if not rows:
            return None
        numbers = tuple(number for number, *_ in rows if number is not None)
        return LiveSession(account_from_fields(rows[0][1:]), numbers)

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
