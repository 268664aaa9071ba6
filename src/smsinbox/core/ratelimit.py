"""Request rate limits per account and per API key, in memory or shared through Redis."""

from __future__ import annotations

import limits
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from smsinbox.errors import StoreUnavailable, TooManyRequests


class RateLimits:
    def __init__(self, *, per_account: str, per_api_key: str, storage_url: str) -> None:
        # The async flavour of the storage: "memory://" -> "async+memory://".
        storage = storage_from_string(f"async+{storage_url}")
        self._limiter = MovingWindowRateLimiter(storage)
        self._per_account = limits.parse(per_account)
        self._per_api_key = limits.parse(per_api_key)

    async def hit(self, *, account_id: int | None, api_key_id: int) -> None:
        """Count one request; TooManyRequests once either limit is exceeded."""
        try:
            allowed = await self._limiter.hit(self._per_api_key, "api_key", str(api_key_id))
            if allowed and account_id is not None:
                allowed = await self._limiter.hit(self._per_account, "account", str(account_id))
        except (ConnectionError, OSError, TimeoutError) as error:
            raise StoreUnavailable("rate limit storage unavailable") from error
        if not allowed:
            raise TooManyRequests("too many requests in a short time")
