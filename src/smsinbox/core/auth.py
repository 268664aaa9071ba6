"""Username and password authentication, as the polling APIs use it on every request.

Clients of those APIs send their password with each poll, often every few seconds. argon2id
is deliberately slow, so a verified pair is remembered for a short while: the key is an
HMAC of the pair under a per-process random key (the password itself is never kept), and
the entry is valid only while the account's password is unchanged.

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

from smsinbox.core.bruteforce import Caller, LoginGuard
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
        # pair digest -> (expires at, monotonic; password_changed_at it was verified against)
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
        """True if `password` is the account's (remembered briefly once verified)."""
        pair = hmac.new(self._key, f"{account.id}\x00{password}".encode(), hashlib.sha256).digest()
        remembered = self._verified.get(pair)
        now = time.monotonic()
        if remembered is not None:
            expires, changed_at = remembered
            if expires > now and changed_at == account.password_changed_at:
                return True
            del self._verified[pair]
        key = (pair, account.password_changed_at)
        verifying = self._verifying.get(key)
        if verifying is None:
            verifying = asyncio.ensure_future(verify_password(account.password_hash, password))
            self._verifying[key] = verifying
            verifying.add_done_callback(lambda _: self._verifying.pop(key, None))
        # Shielded: a caller that gives up does not cancel the others' verification.
        if not await asyncio.shield(verifying):
            return False
        if self.cache_ttl > 0:
            self._verified[pair] = (now + self.cache_ttl, account.password_changed_at)
            while len(self._verified) > MAX_REMEMBERED:
                self._verified.popitem(last=False)
        return True
