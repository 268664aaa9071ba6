"""PostgreSQL stopped or frozen under a serving smsinbox: every API answers its dialect's
"temporarily unavailable" code in bounded time, /readyz says so, nothing hangs, and once the
database is back everything works again without restarting smsinbox.

The database is a private PostgreSQL server started for the test (never the shared one).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from smsinbox.config import Settings
from smsinbox.core.ingest import RawInbound
from smsinbox.services import Services
from smsinbox.store.postgres import MAX_LISTEN_BACKOFF_S, listener_name
from smsinbox.store.tables import NOTIFY_CHANNEL
from tests.conftest import free_port
from tests.faults import PrivatePostgres, private_postgres, server_process, unexpected_log_lines
from tests.receiver import Receiver

pytestmark = pytest.mark.slow

NUMBER = "447700900001"
PASSWORD = "pw"
MC5 = "/services/rest/user/messages"
EAPI = "/eapi/reception/get_inbox/1/1.1"
# Each request must come back at all within this; the server's own db_timeout is shorter.
REQUEST_BOUND_S = 10.0
DB_TIMEOUT_S = 2.0


class Deployment:
    """A private PostgreSQL, the smsinbox server on it, and what a customer has set up."""

    def __init__(self, postgres: PrivatePostgres, receiver: Receiver, log: Path) -> None:
        self.postgres = postgres
        self.receiver = receiver
        self.log = log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.api_key = ""
        self.auth_token = ""
        self.sent = 0
        self.acknowledged: set[str] = set()

    async def provision(self) -> None:
        services = Services.build(Settings(database_url=self.postgres.url))
        await services.start()
        try:
            await services.accounts.add("alice", PASSWORD, msisdns=(NUMBER,))
            _, self.token = await services.upstreams.create("kannel")
            _, self.api_key = await services.api_keys.create("app")
            services.push.addresses.allow_private = True
            await services.push.add("alice", self.receiver.url)
        finally:
            await services.close()

    def env(self) -> dict[str, str]:
        return {
            "SMSINBOX_PUSH_ALLOW_PRIVATE": "true",
            "SMSINBOX_DB_TIMEOUT": str(DB_TIMEOUT_S),
            "SMSINBOX_LOG_LEVEL": "warning",
            # The pruner runs every second, so the test sees it fail and go on.
            "SMSINBOX_RETENTION_INTERVAL": "1",
            # Short retries: pushes that failed during the outage go out soon after it.
            "SMSINBOX_PUSH_RETRY_SCHEDULE": "0,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
        }

    async def ingest(self, http: httpx.AsyncClient) -> httpx.Response:
        """One upstream delivery of a new message; remembers it if it was acknowledged."""
        self.sent += 1
        text = f"message {self.sent}"
        answer = await http.get(
            "/inbound/sms",
            params={
                "token": self.token,
                "from": "447700900123",
                "to": NUMBER,
                "text": text,
                "id": f"up-{self.sent}",
            },
        )
        if answer.status_code == 200:
            self.acknowledged.add(text)
        return answer

    async def login(self, http: httpx.AsyncClient) -> dict[str, Any]:
        answer = await http.post(
            "/json/user/login",
            json={"apiKey": self.api_key, "msisdn": int(NUMBER), "password": PASSWORD},
        )
        body: dict[str, Any] = answer.json()
        self.auth_token = body.get("authToken", self.auth_token)
        return body

    async def requests(self, http: httpx.AsyncClient) -> dict[str, tuple[int, bytes]]:
        """One request of each kind: name -> (HTTP status, body)."""
        calls: dict[str, Awaitable[httpx.Response]] = {
            "ingest": self.ingest(http),
            "mc5": http.get(MC5, params={"username": "alice", "password": PASSWORD, "since": 0}),
            "eapi": http.get(
                EAPI, params={"username": "alice", "password": PASSWORD, "last_retrieved_id": 0}
            ),
            "mysms": http.post(
                "/json/user/message/conversations/get",
                json={"apiKey": self.api_key, "authToken": self.auth_token},
            ),
            "mysms_login": http.post(
                "/json/user/login",
                json={"apiKey": self.api_key, "msisdn": int(NUMBER), "password": PASSWORD},
            ),
            "readyz": http.get("/readyz"),
        }
        answers = await asyncio.gather(*calls.values())
        return {name: (a.status_code, a.content) for name, a in zip(calls, answers, strict=True)}

    async def listening_backends(self) -> int:
        """Connections of the server that LISTEN for outbox notifications (by their name:
        `query` shows a connection's last statement, the listener's periodic check)."""
        connection = await asyncpg.connect(self.postgres.url, timeout=5)
        try:
            return int(
                await connection.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    listener_name(NOTIFY_CHANNEL),
                )
            )
        finally:
            await connection.close()


# Transactions of each background task: their successful count grows while the task lives.
BACKGROUND_READS = {"retention": "list_account_ids", "dispatcher": "list_due_outgoing"}


async def background_runs(http: httpx.AsyncClient) -> dict[str, float]:
    """How many successful passes each background task made, from /metrics."""
    text = (await http.get("/metrics")).text
    runs = dict.fromkeys(BACKGROUND_READS, 0.0)
    for task, name in BACKGROUND_READS.items():
        label = f'smsinbox_db_transaction_duration_seconds_count{{name="{name}",result="ok"}} '
        for line in text.splitlines():
            if line.startswith(label):
                runs[task] = float(line.split()[-1])
    return runs


async def background_tasks_alive(http: httpx.AsyncClient) -> None:
    """Retention and the dispatcher pass again after the outage: they did not die."""
    before = await background_runs(http)
    deadline = time.monotonic() + 40
    while True:
        now = await background_runs(http)
        if all(now[task] > before[task] for task in before):
            return
        assert time.monotonic() < deadline, f"background tasks stopped: {before} -> {now}"
        await asyncio.sleep(0.5)


def unavailable(name: str, status: int, body: bytes) -> bool:
    """The dialect's own "temporarily unavailable" answer for request `name`."""
    expected = {
        "ingest": lambda: status == 503,
        "mc5": lambda: (status, body) == (200, b'{"status":9999}'),
        "eapi": lambda: (status, body) == (200, b"40|temporarily unavailable|"),
        "mysms": lambda: status == 200 and body == b'{"errorCode":99}',
        "mysms_login": lambda: status == 200 and body == b'{"errorCode":99}',
        "readyz": lambda: status == 503,
    }
    return expected[name]()


def served(name: str, status: int, body: bytes) -> bool:
    """A normal, successful answer for request `name`."""
    expected: dict[str, Callable[[], bool]] = {
        "ingest": lambda: status == 200,
        "mc5": lambda: status == 200 and b'"status":0' in body,
        "eapi": lambda: status == 200 and body.startswith(b"0|records to follow|"),
        "mysms": lambda: status == 200 and body.startswith(b'{"errorCode":0'),
        "mysms_login": lambda: status == 200 and body.startswith(b'{"errorCode":0'),
        "readyz": lambda: status == 200,
    }
    return expected[name]()


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    try:
        with private_postgres() as server:
            yield server
    except RuntimeError as missing:
        pytest.skip(str(missing))


@pytest.fixture
async def deployment(
    postgres: PrivatePostgres, tmp_path: Path
) -> AsyncIterator[tuple[Deployment, httpx.AsyncClient]]:
    receiver = Receiver().start()
    setup = Deployment(postgres, receiver, tmp_path / "server.log")
    await setup.provision()
    try:
        with server_process(postgres.url, setup.port, env=setup.env(), log=setup.log):
            async with httpx.AsyncClient(base_url=setup.base, timeout=REQUEST_BOUND_S) as http:
                assert (await setup.login(http))["errorCode"] == 0
                answers = await setup.requests(http)
                assert all(served(n, *a) for n, a in answers.items()), answers
                await listener_back(setup)
                yield setup, http
    finally:
        receiver.stop()
    assert not unexpected_log_lines(setup.log), setup.log.read_text()


async def recovered(setup: Deployment, http: httpx.AsyncClient, deadline_s: float) -> None:
    """Poll every kind of request until all succeed; fail with the last answers if not."""
    deadline = time.monotonic() + deadline_s
    while True:
        answers = await setup.requests(http)
        if all(served(n, *a) for n, a in answers.items()):
            return
        assert time.monotonic() < deadline, f"not recovered: {answers}"
        await asyncio.sleep(0.5)


async def assert_outage_answers(setup: Deployment, http: httpx.AsyncClient) -> None:
    for _ in range(3):  # fresh connections and pooled ones, pre-ping and all
        answers = await setup.requests(http)
        wrong = {n: a for n, a in answers.items() if not unavailable(n, *a)}
        assert not wrong, f"not the dialects' unavailable answers: {wrong}"


async def pushes_flow_again(setup: Deployment) -> None:
    """Everything acknowledged reaches the receiver, including a message committed by
    another process (which only a NOTIFY or the worker's poll tells the server about)."""
    other = Services.build(Settings(database_url=setup.postgres.url, migrate_on_start=False))
    try:
        await other.ingestor.accept(
            RawInbound("447700900123", NUMBER, text=b"from another process"), upstream_id=None
        )
    finally:
        await other.close()
    texts: set[str] = set()
    deadline = time.monotonic() + 30
    wanted = setup.acknowledged | {"from another process"}
    while not wanted <= texts:
        assert time.monotonic() < deadline, f"pushes missing: {sorted(wanted - texts)[:5]}"
        await asyncio.sleep(0.2)
        texts = {
            r.body.decode().split('"text":"')[1].split('"')[0] for r in setup.receiver.received
        }


async def listener_back(setup: Deployment) -> None:
    # The listener may be waiting out its longest backoff when the database comes back.
    deadline = time.monotonic() + MAX_LISTEN_BACKOFF_S + 15
    while await setup.listening_backends() < 1:
        assert time.monotonic() < deadline, "the push worker never listened again"
        await asyncio.sleep(0.2)


async def test_postgres_stopped_gets_unavailable_codes_and_recovers_without_restart(
    deployment: tuple[Deployment, httpx.AsyncClient],
) -> None:
    setup, http = deployment
    setup.postgres.stop("immediate")
    await assert_outage_answers(setup, http)
    setup.postgres.start()
    await recovered(setup, http, deadline_s=60)
    await listener_back(setup)
    await pushes_flow_again(setup)
    await background_tasks_alive(http)


async def test_postgres_frozen_gets_unavailable_codes_in_bounded_time_and_recovers(
    deployment: tuple[Deployment, httpx.AsyncClient],
) -> None:
    setup, http = deployment
    setup.postgres.freeze()
    try:
        await assert_outage_answers(setup, http)
    finally:
        setup.postgres.thaw()
    await recovered(setup, http, deadline_s=60)
    await listener_back(setup)
    await pushes_flow_again(setup)
    await background_tasks_alive(http)


def test_driver_errors_of_a_server_shutting_down_mean_unavailable() -> None:
    """Raised unwrapped while a pool connection opens, during a shutdown or a restart."""
    from smsinbox.store.database import _is_unavailable

    assert _is_unavailable(asyncpg.CannotConnectNowError("the database system is shutting down"))
    assert _is_unavailable(asyncpg.exceptions.AdminShutdownError("terminating connection"))
    assert _is_unavailable(asyncpg.exceptions.ConnectionDoesNotExistError("connection lost"))
    assert _is_unavailable(asyncpg.exceptions.DiskFullError("could not extend file"))
    assert not _is_unavailable(asyncpg.exceptions.UniqueViolationError("duplicate key"))
    assert not _is_unavailable(RuntimeError("a bug"))


async def test_connections_closed_by_a_restart_are_replaced_not_lent_out(
    postgres: PrivatePostgres,
) -> None:
    """Pooled connections used a moment ago and closed by a restart of the database: the next
    requests get fresh ones at once, without the idle check's round trip; one closed while
    a request uses it fails that request as unavailable (never as an unknown error), and the
    request after it works."""
    from smsinbox.errors import StoreUnavailable

    services = Services.build(Settings(database_url=postgres.url, db_timeout=DB_TIMEOUT_S))
    await services.start()
    database = services.store.db
    try:
        await services.accounts.add("alice", PASSWORD, msisdns=(NUMBER,))
        readers = [services.store.get_account("alice") for _ in range(6)]
        assert all(await asyncio.gather(*readers))  # several connections in the pool
        postgres.stop("immediate")
        postgres.start()
        await asyncio.sleep(0.1)  # the event loop sees the sockets close
        for _ in range(6):
            assert await services.store.get_account("alice") is not None

        with pytest.raises(StoreUnavailable):
            async with database.driver_snapshot("restarted while in use") as driver:
                await driver.fetchval("SELECT 1")
                postgres.stop("immediate")
                postgres.start()
                await asyncio.sleep(0.1)
                await driver.fetchval("SELECT 1")
        assert await services.store.get_account("alice") is not None
    finally:
        await services.close()
