"""Request rate limits per account and per API key, in memory or shared through Redis."""

from __future__ import annotations

import time
from collections import deque

import limits
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from smsinbox.errors import StoreUnavailable, TooManyRequests

SWEEP_EVERY = 10_000


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
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - window:
            hits.popleft()
        self._since_sweep += 1
        if self._since_sweep >= SWEEP_EVERY:
            self._sweep(now, window)
        if len(hits) >= item.amount:
            return False
        hits.append(now)
        return True

    def _sweep(self, now: float, window: float) -> None:
        """Forget keys with nothing in their window, so idle callers cost no memory."""
        self._since_sweep = 0
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= now - window]:
            del self._hits[key]


class RateLimits:
    def __init__(self, *, per_account: str, per_api_key: str, storage_url: str) -> None:
        self._per_account = limits.parse(per_account)
        self._per_api_key = limits.parse(per_api_key)
        self._local: LocalWindows | None = None
        self._shared: MovingWindowRateLimiter | None = None
        if storage_url.startswith("memory://"):
            self._local = LocalWindows()
        else:
            # The async flavour of the storage: "redis://..." -> "async+redis://...".
            self._shared = MovingWindowRateLimiter(storage_from_string(f"async+{storage_url}"))

    async def hit(self, *, account_id: int | None, api_key_id: int) -> None:
        """Count one request; TooManyRequests once either limit is exceeded."""
        checks = [(self._per_api_key, f"api_key/{api_key_id}")]
        if account_id is not None:
            checks.append((self._per_account, f"account/{account_id}"))
        try:
            for item, key in checks:
                if not await self._hit(item, key):
                    raise TooManyRequests("too many requests in a short time")
        except (ConnectionError, OSError, TimeoutError) as error:
            raise StoreUnavailable("rate limit storage unavailable") from error

    async def _hit(self, item: limits.RateLimitItem, key: str) -> bool:
        if self._local is not None:
            return self._local.hit(item, key)
        assert self._shared is not None
        return await self._shared.hit(item, *key.split("/"))
