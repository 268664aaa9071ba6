"""Request rate limits per account and per API key, in memory or shared through Redis.

The counters are moving windows. :class:`MovingWindows` is the storage both the rate limits
and the brute-force guard (`core/bruteforce.py`) count in: this process's memory, or Redis
so that every process behind a load balancer counts together.
"""

from __future__ import annotations

import time
from collections import deque

import limits
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from smsinbox.errors import StoreUnavailable, TooManyRequests

SWEEP_EVERY = 10_000
UNREACHABLE = (StorageError, ConnectionError, OSError, TimeoutError)


class LocalWindows:
    """Moving windows in this process's memory, pruned as they are used.

    The `limits` memory storage expires its events from a timer that hands every key to a
    thread a hundred times a second; under load those hand-offs cost the event loop more than
    the requests they count. Counting one process's requests needs no thread at all.
    """

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._since_sweep = 0

    def hit(self, item: limits.RateLimitItem, key: str) -> bool:
        now = time.monotonic()
        window = item.get_expiry()
        hits = self._current(key, now, window)
        self._since_sweep += 1
        if self._since_sweep >= SWEEP_EVERY:
            self._sweep(now, window)
        if len(hits) >= item.amount:
            return False
        hits.append(now)
        return True

    def stats(self, item: limits.RateLimitItem, key: str) -> tuple[int, float]:
        """(events in the window, seconds until its oldest event leaves it)."""
        if key not in self._hits:
            return 0, 0.0  # the common case, asked on every login: no clock read for it
        now = time.monotonic()
        window = item.get_expiry()
        hits = self._current(key, now, window)
        if not hits:
            return 0, 0.0
        return len(hits), hits[0] + window - now

    def clear(self, key: str) -> None:
        self._hits.pop(key, None)

    def _current(self, key: str, now: float, window: float) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - window:
            hits.popleft()
        return hits

    def _sweep(self, now: float, window: float) -> None:
        """Forget keys with nothing in their window, so idle callers cost no memory."""
        self._since_sweep = 0
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= now - window]:
            del self._hits[key]


class MovingWindows:
    """Moving-window counters in memory (one process) or Redis (every process).

    Keys are '/'-separated names such as ``account/42``. A storage that cannot be reached
    raises :class:`StoreUnavailable`.
    """

    def __init__(self, storage_url: str) -> None:
        self.storage_url = storage_url
        self._local: LocalWindows | None = None
        self._shared: MovingWindowRateLimiter | None = None
        if storage_url.startswith("memory://"):
            self._local = LocalWindows()
        else:
            # The async flavour of the storage: "redis://..." -> "async+redis://...". Wrapped
            # exceptions are one type (StorageError) whatever the Redis client raises.
            storage = storage_from_string(f"async+{storage_url}", wrap_exceptions=True)
            self._shared = MovingWindowRateLimiter(storage)

    async def hit(self, item: limits.RateLimitItem, key: str) -> bool:
        """Count one event; False (and not counted) if the window is already full."""
        if self._local is not None:
            return self._local.hit(item, key)
        assert self._shared is not None
        try:
            return await self._shared.hit(item, *key.split("/"))
        except UNREACHABLE as error:
            raise StoreUnavailable("rate limit storage unavailable") from error

    async def stats(self, item: limits.RateLimitItem, key: str) -> tuple[int, float]:
        """(events in the window, seconds until its oldest event leaves it)."""
        if self._local is not None:
            return self._local.stats(item, key)
        assert self._shared is not None
        try:
            reset_at, remaining = await self._shared.get_window_stats(item, *key.split("/"))
        except UNREACHABLE as error:
            raise StoreUnavailable("rate limit storage unavailable") from error
        count = item.amount - remaining
        return count, max(0.0, reset_at - time.time()) if count else 0.0

    async def clear(self, item: limits.RateLimitItem, key: str) -> None:
        """Forget every event counted under `key`."""
        if self._local is not None:
            self._local.clear(key)
            return
        assert self._shared is not None
        try:
            await self._shared.clear(item, *key.split("/"))
        except UNREACHABLE as error:
            raise StoreUnavailable("rate limit storage unavailable") from error


class RateLimits:
    def __init__(
        self,
        *,
        per_account: str,
        per_api_key: str,
        storage_url: str = "memory://",
        windows: MovingWindows | None = None,
    ) -> None:
        self._per_account = limits.parse(per_account)
        self._per_api_key = limits.parse(per_api_key)
        self._windows = windows or MovingWindows(storage_url)

    async def hit(self, *, account_id: int | None, api_key_id: int) -> None:
        """Count one request; TooManyRequests once either limit is exceeded."""
        checks = [(self._per_api_key, f"api_key/{api_key_id}")]
        if account_id is not None:
            checks.append((self._per_account, f"account/{account_id}"))
        for item, key in checks:
            if not await self._windows.hit(item, key):
                raise TooManyRequests("too many requests in a short time")
