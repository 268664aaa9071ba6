"""Failed logins slow, then lock out, the account and the client address, at every door."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from smsinbox.config import Settings
from smsinbox.core.bruteforce import LoginGuard
from smsinbox.core.caller import Caller
from smsinbox.core.ratelimit import MovingWindows
from smsinbox.errors import LoginLockedOut
from smsinbox.services import Services
from tests.conftest import LiveServer, free_port

REDIS_URL = os.environ.get("SMSINBOX_TEST_REDIS_URL", "")
REQUIRE_SERVICES = os.environ.get("SMSINBOX_TEST_REQUIRE_POSTGRES") == "1"
ALICE, BOB = "447700900001", "447700900002"
ADMIN_TOKEN = "admin-token-for-tests"
PER_ACCOUNT = 3
PER_ADDRESS = 6
WINDOW = 30
SHORT_WINDOW = 3


def redis_url_or_skip() -> str:
    if not REDIS_URL:
        if REQUIRE_SERVICES:
            pytest.fail("SMSINBOX_TEST_REQUIRE_POSTGRES=1 but SMSINBOX_TEST_REDIS_URL is unset")
        pytest.skip("Redis tests need SMSINBOX_TEST_REDIS_URL (see .ci/run)")
    return REDIS_URL


def forget_counters(redis_url: str) -> None:
    """Empty every rate-limit and login counter, since test databases reuse account ids."""
    import coredis

    async def forget() -> None:
        client = coredis.Redis.from_url(redis_url)
        keys = [key async for key in client.scan_iter(match="LIMITS:*")]
        if keys:
            await client.delete(keys)

    asyncio.run(forget())


@pytest.fixture(params=["memory"])
def rate_limit_storage(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url = redis_url_or_skip()
    forget_counters(url)
    return url


@pytest.fixture
def login_failure_window() -> int:
    return WINDOW


@pytest.fixture
def settings(database_url: str, rate_limit_storage: str, login_failure_window: int) -> Settings:
    return Settings(
        database_url=database_url,
        rate_limit_storage=rate_limit_storage,
        login_failures_per_account=PER_ACCOUNT,
        login_failures_per_address=PER_ADDRESS,
        login_failure_window=login_failure_window,
        login_failure_delay=0.01,
        login_failure_max_delay=0.04,
        admin_token=ADMIN_TOKEN,
    )


class Doors:
    """One client for every entry point that checks a password or a token."""

    def __init__(self, http: httpx.AsyncClient, api_key: str, upstream_token: str) -> None:
        self.http = http
        self.api_key = api_key
        self.upstream_token = upstream_token

    async def mc5(self, username: str, password: str) -> int:
        response = await self.http.get(
            "/services/rest/user/messages",
            params={"username": username, "password": password, "since": "0"},
        )
        status: int = response.json()["status"]
        return status

    async def eapi(self, username: str, password: str) -> str:
        response = await self.http.post(
            "/eapi/reception/get_inbox/1/1.1",
            data={"username": username, "password": password, "last_retrieved_id": "0"},
        )
        return response.text.split("\n")[0]

    async def mysms_login(self, msisdn: str, password: str, api_key: str | None = None) -> int:
        body = {"apiKey": api_key or self.api_key, "msisdn": int(msisdn), "password": password}
        code: int = (await self.http.post("/json/user/login", json=body)).json()["errorCode"]
        return code

    async def inbound(self, token: str | None = None) -> httpx.Response:
        return await self.http.post(
            "/inbound/sms",
            data={"from": "447700900999", "to": ALICE, "text": "hello"},
            headers={"Authorization": f"Bearer {token or self.upstream_token}"},
        )

    async def admin(self, token: str = ADMIN_TOKEN) -> httpx.Response:
        return await self.http.get(
            "/admin/accounts/alice/push", headers={"Authorization": f"Bearer {token}"}
        )

    async def metrics(self) -> str:
        return (await self.http.get("/metrics")).text


@pytest.fixture
async def doors(services: Services, live_server: LiveServer) -> AsyncIterator[Doors]:
    await services.accounts.add("alice", "right", msisdns=(ALICE,))
    await services.accounts.add("bob", "right", msisdns=(BOB,))
    _, api_key = await services.api_keys.create("app")
    _, upstream_token = await services.upstreams.create("kannel")
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        yield Doors(http, api_key, upstream_token)


def metric(exposition: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in exposition.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match and match[1] == name:
            found = ",".join(sorted((match[2] or "").split(","))) if match[2] else ""
            if found == wanted:
                return float(match[3])
    return 0.0


async def test_failed_logins_slow_then_lock_the_account_at_every_dialect(doors: Doors) -> None:
    assert await doors.mc5("alice", "wrong") == 3
    assert await doors.eapi("alice", "wrong") == "23|invalid credentials|"
    assert await doors.mysms_login(ALICE, "wrong") == 97
    # Three failures: alice is locked out. The right password is refused at every door.
    assert await doors.mc5("alice", "right") == 3
    assert await doors.eapi("alice", "right") == "23|too many failed logins, try again later|"
    assert await doors.mysms_login(ALICE, "right") == 98
    # Bob, from the same address (3 failures of 6), is not.
    assert await doors.mc5("bob", "right") == 0
    assert await doors.mysms_login(BOB, "right") == 0

    exposition = await doors.metrics()
    for entry in ("mc5", "eapi", "mysms"):
        assert metric(exposition, "smsinbox_login_failures_total", entry=entry) == 1
    assert metric(exposition, "smsinbox_login_lockouts_total", entry="mysms", scope="account") == 1
    # After the first failure every admitted login waited before its password was checked:
    # alice's second (eapi) and third (mysms), and bob's two, whose address had failures.
    assert metric(exposition, "smsinbox_login_delay_seconds_count", entry="eapi") == 1
    assert metric(exposition, "smsinbox_login_delay_seconds_count", entry="mysms") == 2
    assert metric(exposition, "smsinbox_login_delay_seconds_count", entry="mc5") == 1
    assert metric(exposition, "smsinbox_login_delay_seconds_sum", entry="mysms") > 0


async def test_a_success_clears_the_account_count(doors: Doors) -> None:
    for _ in range(PER_ACCOUNT - 1):
        assert await doors.mc5("alice", "wrong") == 3
    assert await doors.mc5("alice", "right") == 0
    for _ in range(PER_ACCOUNT - 1):
        assert await doors.mc5("alice", "wrong") == 3
    assert await doors.mc5("alice", "right") == 0


@pytest.mark.parametrize("login_failure_window", [SHORT_WINDOW])
@pytest.mark.parametrize("rate_limit_storage", ["memory", "redis"], indirect=True)
async def test_the_lockout_ends_when_the_failures_leave_the_window(doors: Doors) -> None:
    for _ in range(PER_ACCOUNT):
        assert await doors.mysms_login(ALICE, "wrong") == 97
    assert await doors.mysms_login(ALICE, "right") == 98
    deadline = time.monotonic() + SHORT_WINDOW + 10
    while await doors.mysms_login(ALICE, "right") == 98:
        assert time.monotonic() < deadline, "alice is still locked out long after the window"
        await asyncio.sleep(0.2)
    assert await doors.mc5("alice", "right") == 0


@pytest.mark.parametrize("rate_limit_storage", ["memory", "redis"], indirect=True)
async def test_a_locked_out_address_is_refused_at_every_door(doors: Doors) -> None:
    # Six failures from one address, none of them reaching an account's limit.
    assert await doors.mc5("nobody", "guess") == 200
    assert await doors.mc5("alice", "guess") == 3
    assert await doors.eapi("bob", "guess") == "23|invalid credentials|"
    assert await doors.mysms_login("447700900999", "guess") == 97
    assert (await doors.inbound("up_guess")).status_code == 401
    assert (await doors.admin("guess")).status_code == 401
    # Every right credential from that address is now refused, each door in its own way.
    assert await doors.mc5("bob", "right") == 3
    assert await doors.eapi("alice", "right") == "23|too many failed logins, try again later|"
    assert await doors.mysms_login(BOB, "right") == 98
    inbound = await doors.inbound()
    assert inbound.status_code == 429
    assert 1 <= int(inbound.headers["Retry-After"]) <= WINDOW
    admin = await doors.admin()
    assert admin.status_code == 429 and admin.json() == {
        "error": "too many failed logins, retry later"
    }
    assert 1 <= int(admin.headers["Retry-After"]) <= WINDOW

    exposition = await doors.metrics()
    assert metric(exposition, "smsinbox_login_failures_total", entry="inbound") == 1
    assert metric(exposition, "smsinbox_login_failures_total", entry="admin") == 1
    assert metric(exposition, "smsinbox_login_lockouts_total", entry="admin", scope="address") == 1


async def test_wrong_api_keys_count_as_failed_logins(doors: Doors) -> None:
    for _ in range(PER_ADDRESS):
        assert await doors.mysms_login(ALICE, "right", api_key="ak_guess") == 600
    assert await doors.mysms_login(ALICE, "right") == 98


async def test_wrong_upstream_tokens_lock_out_the_upstream_address(doors: Doors) -> None:
    for _ in range(PER_ADDRESS):
        response = await doors.inbound("up_guess")
        assert response.status_code == 401
    refused = await doors.inbound()
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert refused.text == "too many failed logins, retry later\n"


# --- the guard on its own, in memory and in Redis ------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def windows(request: pytest.FixtureRequest) -> Iterator[MovingWindows]:
    if request.param == "memory":
        yield MovingWindows("memory://")
        return
    url = redis_url_or_skip()
    forget_counters(url)
    yield MovingWindows(url)


async def test_the_wait_doubles_with_each_failure_up_to_the_cap(windows: MovingWindows) -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    guard = LoginGuard(
        windows,
        per_account=10,
        per_address=20,
        window_s=60,
        delay_s=0.5,
        max_delay_s=3.0,
        sleep=record,
    )
    caller = Caller("test", "192.0.2.7")
    for _ in range(6):
        await guard.failed(await guard.admit(caller, 7))
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]
    # A success waits too (before the check), then forgives the account but not the address.
    await guard.succeeded(await guard.admit(caller, 7))
    assert waits[-1] == 3.0
    waits.clear()
    await guard.admit(Caller("test", "192.0.2.8"), 7)
    assert waits == []
    # Six failures from the address weigh as three of an account's (limits 20 and 10).
    await guard.admit(caller, 7)
    await guard.admit(caller, None)
    assert waits == [2.0, 2.0]


async def test_the_guard_locks_out_and_names_when_to_retry(windows: MovingWindows) -> None:
    lockouts: list[tuple[str, str]] = []
    guard = LoginGuard(
        windows,
        per_account=2,
        per_address=100,
        window_s=30,
        delay_s=0,
        max_delay_s=0,
        on_lockout=lambda entry, scope: lockouts.append((entry, scope)),
    )
    caller = Caller("test", "192.0.2.9")
    for _ in range(2):
        await guard.failed(await guard.admit(caller, 8))
    with pytest.raises(LoginLockedOut) as refused:
        await guard.admit(caller, 8)
    assert 1 <= refused.value.retry_after_s <= 30
    assert lockouts == [("test", "account")]
    await guard.admit(caller, 9)  # another account from the same address


async def test_an_unreachable_storage_lets_logins_through_uncounted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = LoginGuard(
        MovingWindows(f"redis://127.0.0.1:{free_port()}/0"),
        per_account=1,
        per_address=1,
        window_s=60,
        delay_s=1.0,
        max_delay_s=1.0,
    )
    caller = Caller("test", "192.0.2.10")
    for _ in range(3):
        attempt = await guard.admit(caller, 1)
        await guard.failed(attempt)
    await guard.succeeded(attempt)
    warnings = [r for r in caplog.records if r.name == "smsinbox.bruteforce"]
    assert len(warnings) == 1 and "not counted" in warnings[0].getMessage()
