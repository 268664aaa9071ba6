"""Fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL comes from SMSINBOX_TEST_DATABASE_URL (.ci/run sets it). Without it the
PostgreSQL variants skip, unless SMSINBOX_TEST_REQUIRE_POSTGRES=1 makes them fail.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit, urlunsplit

import pytest
import uvicorn
from sqlalchemy import text

from smsinbox.app import create_app
from smsinbox.config import Settings
from smsinbox.services import Services
from smsinbox.store import Database
from smsinbox.store.migrate import upgrade
from smsinbox.store.tables import metadata
from smsinbox.web.protocol import JoinedWritesProtocol


def _one_store_per_worker() -> None:
    """Under pytest-xdist (`make test` runs two workers), each worker gets a PostgreSQL
    database and a Redis database of its own, since tests empty both as they begin. Test
    modules read these variables when imported, after this conftest."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return
    number = int(worker[2:])
    shared = os.environ.get("SMSINBOX_TEST_DATABASE_URL", "")
    if shared:
        parts = urlsplit(shared)
        own = f"{parts.path.lstrip('/')}_{worker}"
        asyncio.run(_create_database(urlunsplit(parts._replace(path="/postgres")), own))
        os.environ["SMSINBOX_TEST_DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{own}"))
    redis_url = os.environ.get("SMSINBOX_TEST_REDIS_URL", "")
    if redis_url:
        base, _, index = redis_url.rpartition("/")
        os.environ["SMSINBOX_TEST_REDIS_URL"] = f"{base}/{(int(index) - number) % 16}"


async def _create_database(maintenance_url: str, name: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(maintenance_url)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


if TYPE_CHECKING:
    from tests.receiver import Receiver

_one_store_per_worker()

PG_URL = os.environ.get("SMSINBOX_TEST_DATABASE_URL", "")
REQUIRE_PG = os.environ.get("SMSINBOX_TEST_REQUIRE_POSTGRES") == "1"
ENGINES = ["sqlite", "postgresql"]

_pg_schema_fresh = False


def _reset_postgres() -> None:
    """Fresh schema once per run (so migrations are tested), then empty tables per test."""
    global _pg_schema_fresh

    async def reset() -> None:
        global _pg_schema_fresh
        db = Database(PG_URL)
        try:
            if not _pg_schema_fresh:
                async with db.transaction("test_drop_schema") as connection:
                    await connection.execute(text("DROP SCHEMA public CASCADE"))
                    await connection.execute(text("CREATE SCHEMA public"))
                await upgrade(db)
                _pg_schema_fresh = True
            names = ", ".join(table.name for table in metadata.sorted_tables)
            async with db.transaction("test_truncate") as connection:
                await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        finally:
            await db.close()

    asyncio.run(reset())


@pytest.fixture(params=ENGINES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A clean, migrated-on-first-use database of each engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'smsinbox.db'}"
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("SMSINBOX_TEST_REQUIRE_POSTGRES=1 but SMSINBOX_TEST_DATABASE_URL is unset")
        pytest.skip("PostgreSQL tests need SMSINBOX_TEST_DATABASE_URL (see .ci/run)")
    _reset_postgres()
    return PG_URL


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, reply_window=3600)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    built = Services.build(settings)
    await built.start()
    try:
        yield built
    finally:
        await built.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A push receiver on loopback (tests/receiver.py), stopped after the test."""
    from tests.receiver import Receiver  # it takes free_port from here

    started = Receiver().start()
    yield started
    started.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unreachable_store() -> Settings:
    """Settings whose PostgreSQL never answers: every request meets an unavailable store."""
    return Settings(
        database_url=f"postgresql://nobody@127.0.0.1:{free_port()}/none",
        db_timeout=1.0,
        migrate_on_start=False,
    )


class LiveServer:
    """The real app under uvicorn on a loopback port, in a background thread."""

    def __init__(self, settings: Settings, *, request_log_to: TextIO | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings, request_log_to=request_log_to),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            http=JoinedWritesProtocol,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def live_server(settings: Settings, services: Services) -> Iterator[LiveServer]:
    """A server on the same database as `services` (which has already migrated it)."""
    with LiveServer(settings) as server:
        yield server


BROWSER_TESTS = "test_web_browser.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The browser tests run in a pytest session of their own (`make test` runs both).

    Playwright's sync API keeps an event loop running in the test process from its first
    test to the end of the session, and pytest-asyncio cannot start another one for any
    async test after it. Collected with other tests, they are deselected: run them with
    `pytest tests/test_web_browser.py`.
    """
    browser = [item for item in items if item.path.name == BROWSER_TESTS]
    if browser and len(browser) < len(items):
        config.hook.pytest_deselected(items=browser)
        items[:] = [item for item in items if item.path.name != BROWSER_TESTS]
