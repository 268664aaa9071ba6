"""Web sessions: the browser sessions of the web inbox and the operator console."""

from __future__ import annotations

from sqlalchemy import delete, insert, update

from smsinbox.store import tables as t
from smsinbox.store.base import StoreBase

# Every page of a signed-in browser looks its session up: one driver-level read.
_LIVE_WEB_SESSION = (
    "SELECT account_id, csrf_token FROM web_sessions"
    " WHERE token_hash = ? AND revoked_at IS NULL AND expires_at > ?"
)


class WebSessionStore(StoreBase):
    async def create_web_session(
        self, account_id: int | None, token_hash: str, csrf_token: str, *, now: int,
        expires_at: int,
    ) -> None:  # fmt: skip
        """A session of the account's user, or of the operator when `account_id` is None.
        Sessions that ended long ago go at the same time, so the table stays small."""
        sessions = t.web_sessions.c
        async with self.db.transaction("create_web_session") as connection:
            await connection.execute(delete(t.web_sessions).where(sessions.expires_at < now))
            await connection.execute(
                insert(t.web_sessions).values(
                    account_id=account_id,
                    token_hash=token_hash,
                    csrf_token=csrf_token,
                    created_at=now,
                    expires_at=expires_at,
                )
            )

    async def find_web_session(self, token_hash: str, *, now: int) -> tuple[int | None, str] | None:
        """(account id or None for the operator, CSRF token) of a live session."""
        row = await self.db.read_row("find_web_session", _LIVE_WEB_SESSION, (token_hash, now))
        return None if row is None else (None if row[0] is None else int(row[0]), str(row[1]))

    async def revoke_web_session(self, token_hash: str, *, now: int) -> None:
        sessions = t.web_sessions.c
        async with self.db.transaction("revoke_web_session") as connection:
            await connection.execute(
                update(t.web_sessions)
                .where(sessions.token_hash == token_hash)
                .where(sessions.revoked_at.is_(None))
                .values(revoked_at=now)
            )
