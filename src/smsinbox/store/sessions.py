"""Auth tokens: mysms sessions, issued at login and stored only as digests."""

from __future__ import annotations

from sqlalchemy import bindparam, insert, select, update

from smsinbox.models import Account
from smsinbox.store import tables as t
from smsinbox.store.base import NUMBER_OWNER, StoreBase, account_from_row

# Built once: every mysms request after login runs these.
_tokens = t.auth_tokens.c
_LIVE_TOKEN = (
    select(_tokens.account_id, _tokens.api_key_id)
    .where(_tokens.token_hash == bindparam("digest"))
    .where(_tokens.revoked_at.is_(None))
    .where(_tokens.expires_at > bindparam("now"))
)
_ACCOUNT = select(t.accounts).where(t.accounts.c.id == bindparam("account_id"))
_NUMBERS_OF = (
    select(t.numbers.c.msisdn)
    .where(t.numbers.c.account_id == bindparam("account_id"))
    .order_by(t.numbers.c.msisdn)
)


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
        async with self.db.snapshot("find_auth_token") as connection:
            row = (
                await connection.execute(_LIVE_TOKEN, {"digest": token_hash, "now": now})
            ).first()
        return None if row is None else (int(row.account_id), int(row.api_key_id))

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
        async with self.db.snapshot("get_account_by_id") as connection:
            row = (await connection.execute(_ACCOUNT, {"account_id": account_id})).first()
            if row is None:
                return None
            numbers = await connection.scalars(_NUMBERS_OF, {"account_id": account_id})
            return account_from_row(row), tuple(numbers)

    async def find_account_by_number(self, msisdn: str) -> int | None:
        async with self.db.snapshot("find_account_by_number") as connection:
            account_id = await connection.scalar(NUMBER_OWNER, {"msisdn": msisdn})
        return None if account_id is None else int(account_id)
