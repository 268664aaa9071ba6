"""SQLite on a filesystem that fills up, or turns read-only, under a serving smsinbox:
ingest answers 503 (nothing unacknowledged is lost, nothing acknowledged either), polls of
what is stored keep working where the engine can, the database stays intact, and writes
work again once space returns or the mount is writable, without a restart.

The filesystem is a small tmpfs mounted for the test (root ignores file modes, so only a
real full or read-only filesystem shows what SQLite does then).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from smsinbox.config import Settings
from smsinbox.services import Services
from tests.conftest import LiveServer
from tests.faults import SmallFilesystem

pytestmark = pytest.mark.slow

NUMBER = "447700900001"
MC5 = "/services/rest/user/messages"
EAPI = "/eapi/reception/get_inbox/1/1.1"


@pytest.fixture
def filesystem() -> Iterator[SmallFilesystem]:
    if not SmallFilesystem.available():
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights)")
    fs = SmallFilesystem(size_kib=8 * 1024).mount()
    try:
        yield fs
    finally:
        with contextlib.suppress(Exception):
            fs.remount(read_only=False)
        fs.unmount()


class Upstream:
    """An upstream delivering messages over HTTP; remembers what was acknowledged."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.sent = 0
        self.acknowledged: set[str] = set()
        self._http: httpx.AsyncClient | None = None

    @contextlib.asynccontextmanager
    async def connect(self, server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            self._http = http
            yield http

    @property
    def http(self) -> httpx.AsyncClient:
        assert self._http is not None
        return self._http

    async def deliver(self) -> int:
        self.sent += 1
        message_id = f"up-{self.sent}"
        answer = await self.http.get(
            "/inbound/sms",
            params={"token": self.token, "from": "1", "to": NUMBER, "text": "x" * 400}
            | {"id": message_id},
        )
        assert answer.status_code in (200, 503), (answer.status_code, answer.text)
        if answer.status_code == 200:
            self.acknowledged.add(message_id)
        return answer.status_code

    async def deliver_until(self, status: int, most: int) -> None:
        for _ in range(most):
            if await self.deliver() == status:
                return
        raise AssertionError(f"no {status} in {most} deliveries")

    async def recovers(self, deadline_s: float = 20) -> None:
        deadline = time.monotonic() + deadline_s
        while await self.deliver() != 200:
            assert time.monotonic() < deadline, "ingest did not recover"
            await asyncio.sleep(0.2)


async def polls_answer(http: httpx.AsyncClient) -> None:
    """Polls come back with messages or the dialect's unavailable code, never a 5xx."""
    mc5 = await http.get(MC5, params={"username": "alice", "password": "pw", "since": 0})
    assert mc5.status_code == 200
    assert mc5.json()["status"] in (0, 9999)
    eapi = await http.get(
        EAPI, params={"username": "alice", "password": "pw", "last_retrieved_id": 0}
    )
    assert eapi.status_code == 200
    assert eapi.text.startswith(("0|records to follow|", "40|temporarily unavailable|"))


@pytest.fixture
async def provisioned(filesystem: SmallFilesystem) -> tuple[Settings, Upstream]:
    """An account, an upstream and 20 acknowledged messages on the small filesystem; no
    connection to the database is left open."""
    path = filesystem.path / "smsinbox.db"
    settings = Settings(database_url=f"sqlite:///{path}", db_timeout=2.0)
    services = Services.build(settings)
    await services.start()
    try:
        await services.accounts.add("alice", "pw", msisdns=(NUMBER,))
        _, token = await services.upstreams.create("kannel")
    finally:
        await services.close()
    upstream = Upstream(token)
    with LiveServer(settings) as server:
        async with upstream.connect(server):
            for _ in range(20):
                assert await upstream.deliver() == 200
    return settings, upstream


def database_path(settings: Settings) -> Path:
    return Path(settings.database_url.removeprefix("sqlite:///"))


def assert_intact(path: Path, acknowledged: set[str]) -> None:
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = [r[0] for r in connection.execute("SELECT upstream_message_id FROM messages")]
    finally:
        connection.close()
    assert acknowledged <= set(stored), "an acknowledged message was lost"
    assert len(stored) == len(set(stored)), "a message was stored twice"


def fill(filesystem_path: Path) -> Path:
    """Take every free byte of the filesystem with one file."""
    filler = filesystem_path / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    return filler


async def test_disk_full_gets_503_keeps_data_and_recovers_when_space_returns(
    provisioned: tuple[Settings, Upstream],
) -> None:
    settings, upstream = provisioned
    path = database_path(settings)
    with LiveServer(settings) as server:
        async with upstream.connect(server) as http:
            filler = fill(path.parent)
            await upstream.deliver_until(503, most=200)
            for _ in range(5):
                assert await upstream.deliver() == 503
                await polls_answer(http)
            filler.unlink()
            await upstream.recovers()
            for _ in range(10):
                assert await upstream.deliver() == 200
            await polls_answer(http)
    assert_intact(path, upstream.acknowledged)


async def test_read_only_filesystem_gets_503_keeps_data_and_recovers_when_writable(
    provisioned: tuple[Settings, Upstream], filesystem: SmallFilesystem
) -> None:
    """The kernel refuses to make a filesystem read-only while a file on it is open for
    writing (EBUSY), so the server meets a volume that is read-only when it starts (as
    after a reboot that mounted it so), and that becomes writable while it serves."""
    settings, upstream = provisioned
    path = database_path(settings)
    filesystem.remount(read_only=True)
    try:
        with LiveServer(dataclasses.replace(settings, migrate_on_start=False)) as server:
            async with upstream.connect(server) as http:
                for _ in range(5):
                    assert await upstream.deliver() == 503
                    await polls_answer(http)
                filesystem.remount(read_only=False)
                await upstream.recovers()
                for _ in range(10):
                    assert await upstream.deliver() == 200
                await polls_answer(http)
    finally:
        with contextlib.suppress(Exception):
            filesystem.remount(read_only=False)
    assert_intact(path, upstream.acknowledged)
