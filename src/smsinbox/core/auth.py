"""Username and password authentication, as the polling APIs use it on every request.

Clients of those APIs send their password with each poll, often every few seconds. argon2id
is deliberately slow, so a verified pair is remembered while it is in use: the key is an
HMAC of the pair under a per-process random key (the password itself is never kept), the
entry is valid only while the account's password is unchanged, and it is forgotten once
unused for the remembered time. Checking the same pair with argon2 again would only say
again what the unchanged hash said; it would cost a core for tens of milliseconds and
64 MiB every few minutes per poller, the pauses that pollers beside it waited out.

Every attempt passes the brute-force guard (`core/bruteforce.py`): failures slow the next
attempts and then lock the account, or the caller's address, out for a while.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
from collections import OrderedDict

from smsinbox.core.bruteforce import LoginGuard
from smsinbox.core.caller import Caller
from smsinbox.core.passwords import verify_password
from smsinbox.errors import (
    AccountBlocked,
    AccountNeedsActivation,
    AuthenticationFailed,
    InvalidInput,
    MissingParameter,
    UnknownAccount,
)
from smsinbox.models import Account, AccountStatus
from smsinbox.store import Store

MAX_REMEMBERED = 10_000


class PasswordAuthenticator:
    def __init__(self, store: Store, guard: LoginGuard, *, cache_ttl: float) -> None:
        self.store = store
        self.guard = guard
        self.cache_ttl = cache_ttl
        self._key = os.urandom(32)
        # pair digest -> (forgotten at, monotonic; password_changed_at it was verified against),
        # least recently used first
        self._verified: OrderedDict[bytes, tuple[float, int]] = OrderedDict()
        # Verifications in progress, shared by every caller with the same pair: when a
        # remembered pair expires, all of an account's pollers would otherwise run argon2 at
        # once, and a burst of them holds every request of that account for seconds.
        self._verifying: dict[tuple[bytes, int], asyncio.Future[bool]] = {}

    async def authenticate(
        self, username: str | None, password: str | None, caller: Caller
    ) -> Account:
        """The active account these credentials belong to, or the domain error that says why not.

        Order matters: an unknown user and a wrong password are told apart (the MC5
        platform does), but nothing about the account's status is told to a caller who
        does not know its password.
        """
        if not username:
            raise MissingParameter("username")
        if not password:
            raise MissingParameter("password")
        if any(character.isspace() for character in username):
            raise InvalidInput("username cannot contain spaces", "username")
        account = await self.store.get_account(username)
        attempt = await self.guard.admit(caller, None if account is None else account.id)
        if account is None:
            await self.guard.failed(attempt)
            raise UnknownAccount(f"no account named {username!r}")
        if not await self.password_matches(account, password):
            await self.guard.failed(attempt)
            raise AuthenticationFailed("wrong password")
        await self.guard.succeeded(attempt)
        if account.status is AccountStatus.BLOCKED:
            raise AccountBlocked("account is blocked")
        if account.status is AccountStatus.NEEDS_ACTIVATION:
            raise AccountNeedsActivation("account needs to be activated")
        return account

    async def password_matches(self, account: Account, password: str) -> bool:
        """True if `password` is the account's (remembered while in use once verified)."""
        pair = hmac.new(self._key, f"{account.id}\x00{password}".encode(), hashlib.sha256).digest()
        remembered = self._verified.get(pair)
        now = time.monotonic()
        if remembered is not None:
            forgotten_at, changed_at = remembered
            if forgotten_at > now and changed_at == account.password_changed_at:
                self._verified[pair] = (now + self.cache_ttl, changed_at)
                self._verified.move_to_end(pair)
                return True
            del self._verified[pair]
        # Shielded: a caller that gives up does not cancel the others' verification.
        return await asyncio.shield(self._verification(pair, account, password))

    def _verification(self, pair: bytes, account: Account, password: str) -> asyncio.Future[bool]:
        """The verification of this pair now running, or a new one; a match is remembered."""
        key = (pair, account.password_changed_at)
        verifying = self._verifying.get(key)
        if verifying is None:
            verifying = asyncio.ensure_future(self._verify(pair, account, password))
            self._verifying[key] = verifying

            def done(finished: asyncio.Future[bool]) -> None:
                self._verifying.pop(key, None)
                if not finished.cancelled():
                    finished.exception()  # its callers may all have given up waiting

            verifying.add_done_callback(done)
        return verifying

    async def _verify(self, pair: bytes, account: Account, password: str) -> bool:
        if not await verify_password(account.password_hash, password):
            return False
        if self.cache_ttl > 0:
            forgotten_at = time.monotonic() + self.cache_ttl
            self._verified[pair] = (forgotten_at, account.password_changed_at)
            self._verified.move_to_end(pair)
            while len(self._verified) > MAX_REMEMBERED:
                self._verified.popitem(last=False)
        return True
