"""Brute-force protection: failed logins are slowed, then refused, per account and per address.

Every entry point that checks a password or a token asks the guard first (:meth:`admit`),
then reports the outcome (:meth:`failed` or :meth:`succeeded`). Failures are counted in
moving windows in the rate-limit storage, so with Redis every process counts together.

- Slowed: an attempt on an account with failures in the window waits before its
  credentials are checked, ``delay_s`` doubled per earlier failure, up to ``max_delay_s``.
  An address's failures count in proportion to the two limits (with 10 per account and 50
  per address, five failures from an address weigh as one of an account's), so many users
  behind one NAT are not slowed by a few typos while a guesser trying many usernames is.
  The wait comes whatever the outcome, so an attacker cannot cut it short by telling a
  fast success from a slow failure.
- Refused: once an account or an address has ``per_account`` / ``per_address`` failures in
  the window, every attempt is refused with :class:`LoginLockedOut`, a right password
  included, until the oldest of those failures leaves the window. Nothing is verified
  meanwhile, so a locked-out attacker learns nothing about the passwords tried.
- A success clears the account's failures; the address keeps its own, or an attacker who
  owns one account could clear the count between guesses at others.

Attempts running at the same moment are admitted before any of them is counted, so a
caller with many connections open gets a few guesses past the limit at most.

If the storage (Redis) does not answer, the guard lets every attempt through uncounted and
logs a warning: an outage of the counters must not become an outage of polling and
ingestion, which never depended on Redis otherwise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable

import limits

from smsinbox.core.caller import Caller
from smsinbox.core.ratelimit import MovingWindows
from smsinbox.errors import LoginLockedOut, StoreUnavailable

log = logging.getLogger("smsinbox.bruteforce")

WARN_EVERY_S = 60.0


@dataclasses.dataclass(slots=True)  # not frozen: one per login or delivery
class Attempt:
    """One admitted attempt, to report back as failed or succeeded."""

    caller: Caller
    account_id: int | None
    account_failures: int


class LoginGuard:
    def __init__(
        self,
        windows: MovingWindows,
        *,
        per_account: int,
        per_address: int,
        window_s: int,
        delay_s: float,
        max_delay_s: float,
        on_failure: Callable[[str], None] = lambda entry: None,
        on_lockout: Callable[[str, str], None] = lambda entry, scope: None,
        on_delay: Callable[[str, float], None] = lambda entry, seconds: None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.windows = windows
        self._per_account = limits.RateLimitItemPerSecond(per_account, window_s)
        self._per_address = limits.RateLimitItemPerSecond(per_address, window_s)
        self.delay_s = delay_s
        self.max_delay_s = max_delay_s
        self.on_failure = on_failure
        self.on_lockout = on_lockout
        self.on_delay = on_delay
        self.sleep = sleep
        self._warned_at: float | None = None

    def _storage_unavailable(self) -> None:
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning("rate limit storage unavailable: failed logins are not counted")

    def _keys(
        self, caller: Caller, account_id: int | None
    ) -> list[tuple[str, limits.RateLimitItem, str]]:
        keys: list[tuple[str, limits.RateLimitItem, str]] = []
        if account_id is not None:
            keys.append(("account", self._per_account, f"login/account/{account_id}"))
        if caller.address:
            keys.append(("address", self._per_address, f"login/address/{caller.address}"))
        return keys

    def delay_for(self, failures: int) -> float:
        """Seconds an attempt waits after `failures` recent failures (0 for none)."""
        if failures <= 0 or self.delay_s <= 0:
            return 0.0
        return float(min(self.max_delay_s, self.delay_s * 2 ** min(failures - 1, 32)))

    async def admit(self, caller: Caller, account_id: int | None) -> Attempt:
        """Refuse a locked-out account or address; hold back one with recent failures."""
        worst = 0
        account_failures = 0
        for scope, item, key in self._keys(caller, account_id):
            try:
                failures, frees_in = await self.windows.stats(item, key)
            except StoreUnavailable:
                self._storage_unavailable()
                return Attempt(caller, account_id, 0)
            if failures >= item.amount:
                raise LoginLockedOut(
                    f"too many failed logins for this {scope}", max(1, math.ceil(frees_in))
                )
            if scope == "account":
                account_failures = failures
                worst = max(worst, failures)
            else:
                worst = max(worst, failures * self._per_account.amount // item.amount)
        delay = self.delay_for(worst)
        if delay > 0:
            self.on_delay(caller.entry, delay)
            await self.sleep(delay)
        return Attempt(caller, account_id, account_failures)

    async def failed(self, attempt: Attempt) -> None:
        """Count a failed attempt against its account and its address."""
        self.on_failure(attempt.caller.entry)
        try:
            for scope, item, key in self._keys(attempt.caller, attempt.account_id):
                if not await self.windows.hit(item, key):
                    continue  # already locked out by attempts running beside this one
                failures, _ = await self.windows.stats(item, key)
                if failures >= item.amount:
                    self.on_lockout(attempt.caller.entry, scope)
        except StoreUnavailable:
            self._storage_unavailable()

    async def succeeded(self, attempt: Attempt) -> None:
        """The right credentials: the account's failures are forgiven."""
        if attempt.account_id is not None and attempt.account_failures > 0:
            try:
                await self.windows.clear(self._per_account, f"login/account/{attempt.account_id}")
            except StoreUnavailable:
                self._storage_unavailable()
