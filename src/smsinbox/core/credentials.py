"""Upstream tokens and API keys: issue, list, revoke, recognise."""

from __future__ import annotations

import re

from smsinbox.core.clock import Clock, now_ms
from smsinbox.core.tokens import digest, new_secret
from smsinbox.errors import InvalidInput
from smsinbox.models import Credential
from smsinbox.store import Store
from smsinbox.store.credentials import CredentialKind

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
PREFIXES: dict[CredentialKind, str] = {"upstream": "up_", "api_key": "ak_"}


class Credentials:
    def __init__(self, store: Store, kind: CredentialKind, clock: Clock = now_ms) -> None:
        self.store = store
        self.kind = kind
        self.clock = clock

    async def create(self, name: str) -> tuple[Credential, str]:
        """A new credential and its secret; the secret is shown once and never stored."""
        if not _NAME.fullmatch(name):
            raise InvalidInput(
                "name must be 1 to 128 letters, digits and . _ @ -, starting with a letter "
                "or digit",
                "name",
            )
        secret = new_secret(PREFIXES[self.kind])
        credential = await self.store.create_credential(
            self.kind, name, digest(secret), self.clock()
        )
        return credential, secret

    async def list(self) -> list[Credential]:
        return await self.store.list_credentials(self.kind)

    async def revoke(self, name: str) -> None:
        await self.store.revoke_credential(self.kind, name, self.clock())

    async def recognise(self, secret: str | None) -> Credential | None:
        """The active credential this secret belongs to, or None."""
        if not secret or len(secret) > 256:
            return None
        return await self.store.find_credential(self.kind, digest(secret))
