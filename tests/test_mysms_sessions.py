"""mysms login, logout, tokens, API keys, account status and rate limits."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from smsinbox.config import Settings
from smsinbox.models import AccountStatus
from smsinbox.services import Services
from tests.conftest import LiveServer
from tests.mysms_client import Mysms

ALICE = 447700900001


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, rate_limit_per_account="8/minute")


@pytest.fixture
async def api_key(services: Services) -> str:
    await services.accounts.add("alice", "pw", msisdns=(str(ALICE),))
    await services.accounts.add("carol", "pw", msisdns=("447700900003",))
    await services.accounts.block("carol")
    await services.accounts.add(
        "dave", "pw", msisdns=("447700900004",), status=AccountStatus.NEEDS_ACTIVATION
    )
    _, key = await services.api_keys.create("app")
    return key


@pytest.fixture
async def client(api_key: str, live_server: LiveServer) -> AsyncIterator[Mysms]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        yield Mysms(http, api_key)


async def test_login_gives_a_token_that_opens_the_api(client: Mysms) -> None:
    answer = await client.login(ALICE, "pw")
    assert answer["errorCode"] == 0 and answer["authToken"].startswith("at_")
    assert await client.call("/user/message/conversations/get") == {
        "errorCode": 0,
        "conversations": [],
    }


@pytest.mark.parametrize(
    ("msisdn", "password", "code"),
    [
        (ALICE, "wrong", 97),
        (447700900999, "pw", 97),  # nobody owns the number
        (447700900003, "pw", 97),  # blocked
        (447700900004, "pw", 97),  # not activated
        (None, "pw", 2),
        (ALICE, None, 2),
    ],
)
async def test_failed_logins(
    client: Mysms, msisdn: int | None, password: str | None, code: int
) -> None:
    fields = {k: v for k, v in (("msisdn", msisdn), ("password", password)) if v is not None}
    answer = await client.call("/user/login", session=False, **fields)
    assert answer == {"errorCode": code}


async def test_bad_api_key_is_600_everywhere(client: Mysms) -> None:
    await client.login(ALICE, "pw")
    client.api_key = "ak_not-a-key"
    assert await client.call("/user/message/conversations/get") == {"errorCode": 600}
    assert (await client.login(ALICE, "pw"))["errorCode"] == 600


async def test_bad_missing_and_foreign_tokens_are_100(client: Mysms, services: Services) -> None:
    client.token = "at_made-up"
    assert await client.call("/user/message/conversations/get") == {"errorCode": 100}
    client.token = None
    assert await client.call("/user/message/conversations/get") == {"errorCode": 100}
    await client.login(ALICE, "pw")
    _, other_key = await services.api_keys.create("other-app")
    client.api_key = other_key  # a token is only good with the key it was issued under
    assert await client.call("/user/message/conversations/get") == {"errorCode": 100}


async def test_logout_and_password_change_end_sessions(client: Mysms, services: Services) -> None:
    await client.login(ALICE, "pw")
    assert await client.call("/user/logout", session=True) == {"errorCode": 0}
    assert await client.call("/user/message/conversations/get") == {"errorCode": 100}
    await client.login(ALICE, "pw")
    await services.accounts.change_password("alice", "new")
    assert await client.call("/user/message/conversations/get") == {"errorCode": 100}


async def test_blocking_an_account_denies_its_sessions(client: Mysms, services: Services) -> None:
    await client.login(ALICE, "pw")
    await services.accounts.block("alice")
    assert await client.call("/user/message/conversations/get") == {"errorCode": 97}


async def test_too_many_requests_is_98(client: Mysms) -> None:
    await client.login(ALICE, "pw")
    codes = [(await client.call("/user/message/conversations/get"))["errorCode"] for _ in range(10)]
    assert codes[:8] == [0] * 8
    assert codes[8:] == [98, 98]


async def test_expired_tokens_are_refused(services: Services, api_key: str) -> None:
    token = await services.sessions.login(api_key, str(ALICE), "pw")
    now = services.sessions.clock()
    services.sessions.clock = lambda: now + services.sessions.token_ttl_ms + 1
    from smsinbox.errors import InvalidAuthToken

    with pytest.raises(InvalidAuthToken):
        await services.sessions.authenticate(api_key, token)


async def test_a_session_sees_the_accounts_numbers_as_they_are_now(
    services: Services, api_key: str
) -> None:
    token = await services.sessions.login(api_key, str(ALICE), "pw")
    await services.accounts.add_number("447700900002", "alice")
    principal = await services.sessions.authenticate(api_key, token)
    assert principal.username == "alice"
    assert principal.numbers == ("447700900001", "447700900002")
    # An account whose numbers were all taken away keeps its session, with no number.
    await services.accounts.remove_number("447700900001")
    await services.accounts.remove_number("447700900002")
    principal = await services.sessions.authenticate(api_key, token)
    assert (principal.username, principal.numbers) == ("alice", ())
