"""Upstream tokens and API keys: issue, list, revoke, recognise.

Every ingested message and every mysms request presents one, thousands a second; looking
each up in the database was, on PostgreSQL, a round trip a message and a fifth of ingest's
CPU. So a recognised credential is remembered for `remember_s` seconds (from its look-up,
not its last use) by its digest, never its secret. A revoke through this object forgets it
at once; one made by another process (the CLI is one) is seen once the memory has lapsed,
within `remember_s`. Unknown secrets are never remembered: a new credential works at once,
and guesses cost no memory.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable

from smsinbox.core.clock import Clock, now_ms
from smsinbox.core.tokens import digest, new_secret
from smsinbox.errors import InvalidInput
from smsinbox.models import Credential
from smsinbox.store import Store
from smsinbox.store.credentials import CredentialKind

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
PREFIXES: dict[CredentialKind, str] = {"upstream": "up_", "api_key": "ak_"}
MAX_REMEMBERED = 10_000


class Credentials:
    def __init__(
        self,
        store: Store,
        kind: CredentialKind,
        clock: Clock = now_ms,
        *,
        remember_s: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.kind = kind
        self.clock = clock
        self.remember_s = remember_s
        self.monotonic = monotonic
        # digest -> (the credential, when it is forgotten), oldest look-up first
        self._recognised: OrderedDict[str, tuple[Credential, float]] = OrderedDict()

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
        for key in [k for k, (known, _) in self._recognised.items() if known.name == name]:
            del self._recognised[key]

    async def recognise(self, secret: str | None) -> Credential | None:
        """The active credential this secret belongs to (as of at most `remember_s` ago),
        or None."""
        if not secret or len(secret) > 256:
            return None
        key = digest(secret)
        now = self.monotonic()
        remembered = self._recognised.get(key)
        if remembered is not None:
            credential, forgotten_at = remembered
            if now < forgotten_at:
                return credential
            del self._recognised[key]
        found = await self.store.find_credential(self.kind, key)
        if found is not None and self.remember_s > 0:
            self._recognised[key] = (found, now + self.remember_s)
            if len(self._recognised) > MAX_REMEMBERED:
                self._recognised.popitem(last=False)
        return found
