"""Rate limits hold per account and per API key, in memory and shared through Redis."""

from __future__ import annotations

import os
import uuid

import pytest

from smsinbox.core.ratelimit import RateLimits
from smsinbox.errors import TooManyRequests

REDIS_URL = os.environ.get("SMSINBOX_TEST_REDIS_URL", "")


@pytest.fixture(params=["memory", "redis"])
def storage_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    if not REDIS_URL:
        pytest.skip("Redis tests need SMSINBOX_TEST_REDIS_URL (see .ci/run)")
    return REDIS_URL


async def test_each_limit_counts_on_its_own(storage_url: str) -> None:
    limits = RateLimits(per_account="3/minute", per_api_key="5/minute", storage_url=storage_url)
    key = int(uuid.uuid4().int % 10**9)  # fresh counters even in a shared Redis
    for _ in range(3):
        await limits.hit(account_id=key, api_key_id=key)
    with pytest.raises(TooManyRequests):
        await limits.hit(account_id=key, api_key_id=key)
    await limits.hit(account_id=key + 1, api_key_id=key)  # another account, same key
    with pytest.raises(TooManyRequests):
        await limits.hit(account_id=key + 2, api_key_id=key)  # the key is spent now


async def test_two_limiters_on_one_redis_share_their_counts() -> None:
    if not REDIS_URL:
        pytest.skip("Redis tests need SMSINBOX_TEST_REDIS_URL (see .ci/run)")
    first = RateLimits(per_account="2/minute", per_api_key="100/minute", storage_url=REDIS_URL)
    second = RateLimits(per_account="2/minute", per_api_key="100/minute", storage_url=REDIS_URL)
    account = int(uuid.uuid4().int % 10**9)
    await first.hit(account_id=account, api_key_id=1)
    await second.hit(account_id=account, api_key_id=1)
    with pytest.raises(TooManyRequests):
        await first.hit(account_id=account, api_key_id=1)
