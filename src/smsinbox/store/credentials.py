"""Named secrets: upstream tokens (who may deliver messages) and mysms API keys.

Only a SHA-256 digest of each secret is stored. The secrets are 256-bit random strings, so
a fast digest is enough; the lookup by digest never compares secret bytes directly.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import Table, exc, insert, select, update

from smsinbox.errors import AlreadyExists, NotFound
from smsinbox.models import Credential
from smsinbox.store import tables as t
from smsinbox.store.base import StoreBase

CredentialKind = Literal["upstream", "api_key"]


def _table(kind: CredentialKind) -> tuple[Table, str]:
    if kind == "upstream":
        return t.upstreams, "token_hash"
    return t.api_keys, "key_hash"


# Every inbound message and every mysms request looks its credential up: driver level.
_ACTIVE_WITH_DIGEST: dict[CredentialKind, str] = {
    "upstream": "SELECT id, name, created_at FROM upstreams"
    " WHERE token_hash = ? AND revoked_at IS NULL",
    "api_key": "SELECT id, name, created_at FROM api_keys"
    " WHERE key_hash = ? AND revoked_at IS NULL",
}


class CredentialStore(StoreBase):
    async def create_credential(
        self, kind: CredentialKind, name: str, secret_hash: str, now: int
    ) -> Credential:
        table, hash_column = _table(kind)
        try:
            async with self.db.transaction(f"create_{kind}") as connection:
                credential_id = await connection.scalar(
                    insert(table)
                    .values({"name": name, hash_column: secret_hash, "created_at": now})
                    .returning(table.c.id)
                )
        except exc.IntegrityError:
            raise AlreadyExists(
                f"a {kind.replace('_', ' ')} named {name!r} already exists"
            ) from None
        return Credential(id=int(credential_id or 0), name=name, created_at=now, revoked_at=None)

    async def list_credentials(self, kind: CredentialKind) -> list[Credential]:
        table, _ = _table(kind)
        async with self.db.snapshot(f"list_{kind}s") as connection:
            rows = (await connection.execute(select(table).order_by(table.c.id))).all()
        return [
            Credential(
                id=row.id, name=row.name, created_at=row.created_at, revoked_at=row.revoked_at
            )
            for row in rows
        ]

    async def revoke_credential(self, kind: CredentialKind, name: str, now: int) -> None:
        table, _ = _table(kind)
        async with self.db.transaction(f"revoke_{kind}") as connection:
            result = await connection.execute(
                update(table)
                .where(table.c.name == name)
                .where(table.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            if result.rowcount == 0:
                raise NotFound(f"no active {kind.replace('_', ' ')} named {name!r}")

    async def find_credential(self, kind: CredentialKind, secret_hash: str) -> Credential | None:
        """The active credential whose secret has this digest, if any."""
        row = await self.db.read_row(f"find_{kind}", _ACTIVE_WITH_DIGEST[kind], (secret_hash,))
        if row is None:
            return None
        credential_id, name, created_at = row
        return Credential(id=credential_id, name=name, created_at=created_at, revoked_at=None)
