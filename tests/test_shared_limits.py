"""Two server processes on one Redis count rate limits and failed logins together."""

from __future__ import annotations

from contextlib import ExitStack

import httpx
import pytest

from smsinbox.services import Services
from tests.faults import serving
from tests.test_bruteforce import forget_counters, redis_url_or_skip

pytestmark = pytest.mark.slow

ALICE, BOB = "447700900001", "447700900002"
PER_ACCOUNT_REQUESTS = 10
PER_ACCOUNT_FAILURES = 4


@pytest.fixture
def redis_url() -> str:
    url = redis_url_or_skip()
    forget_counters(url)
    return url


async def test_two_processes_share_rate_limits_and_failed_logins(
    services: Services, database_url: str, redis_url: str
) -> None:
    await services.accounts.add("alice", "right", msisdns=(ALICE,))
    await services.accounts.add("bob", "right", msisdns=(BOB,))
    _, api_key = await services.api_keys.create("app")
    env = {
        "SMSINBOX_DATABASE_URL": database_url,
        "SMSINBOX_LOG_LEVEL": "warning",
        "SMSINBOX_PUSH_WORKER": "false",
        "SMSINBOX_RATE_LIMIT_STORAGE": redis_url,
        "SMSINBOX_RATE_LIMIT_PER_ACCOUNT": f"{PER_ACCOUNT_REQUESTS}/minute",
        "SMSINBOX_LOGIN_FAILURES_PER_ACCOUNT": str(PER_ACCOUNT_FAILURES),
        "SMSINBOX_LOGIN_FAILURES_PER_ADDRESS": "1000",
        "SMSINBOX_LOGIN_FAILURE_DELAY": "0.01",
        "SMSINBOX_LOGIN_FAILURE_MAX_DELAY": "0.05",
    }
    with ExitStack() as stack:
        urls = [stack.enter_context(serving(env)) for _ in range(2)]
        clients = [stack.enter_context(httpx.Client(base_url=url, timeout=10)) for url in urls]

        def mysms(number: int, path: str, **body: object) -> dict[str, object]:
            """A mysms call to process `number` modulo 2."""
            answer = clients[number % 2].post("/json" + path, json={"apiKey": api_key, **body})
            found: dict[str, object] = answer.json()
            return found

        # Requests alternate between the processes; together they meet the account's limit.
        login = mysms(0, "/user/login", msisdn=int(ALICE), password="right")
        token = login["authToken"]
        codes = [
            mysms(number, "/user/contact/contacts/get", authToken=token)["errorCode"]
            for number in range(PER_ACCOUNT_REQUESTS + 2)
        ]
        assert codes == [0] * PER_ACCOUNT_REQUESTS + [98, 98]

        # Failed logins alternate too: each process saw half, the account is locked out.
        for number in range(PER_ACCOUNT_FAILURES):
            answer = clients[number % 2].get(
                "/services/rest/user/messages",
                params={"username": "bob", "password": "wrong", "since": "0"},
            )
            assert answer.json() == {"status": 3}
        for number in range(2):
            login = mysms(number, "/user/login", msisdn=int(BOB), password="right")
            assert login == {"errorCode": 98}
            answer = clients[number].post(
                "/eapi/reception/get_inbox/1/1.1",
                data={"username": "bob", "password": "right", "last_retrieved_id": "0"},
            )
            assert answer.text == "23|too many failed logins, try again later|"
