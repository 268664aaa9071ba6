"""What an operator watches: the process and build series of /metrics, the worker's own
/metrics, JSON log lines, and the request id that ties an answer to its log lines."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from smsinbox import __version__
from smsinbox.config import Settings
from smsinbox.core.ingest import RawInbound
from smsinbox.logs import JsonFormatter, RequestIdFilter
from smsinbox.services import Services
from smsinbox.web.requestlog import RequestLog
from tests.conftest import LiveServer, free_port, unreachable_store
from tests.receiver import Receiver
from tests.web_client import WebClient

T = TypeVar("T")

NUMBER = "447700900001"
TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) \S+ .*")


def engine_of(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


def samples(exposition: str) -> dict[str, list[dict[str, str]]]:
    """Each sample name of a Prometheus exposition with the label sets it has."""
    found: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(dict(sample.labels))
    return found


def within(seconds: float, check: Callable[[], T | None], what: str) -> T:
    """`check()`'s first answer that is not None, polled until the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        answer = check()
        if answer is not None:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.05)


# --- /metrics of the server ---


async def test_metrics_show_the_process_and_which_build_runs(
    settings: Settings, services: Services
) -> None:
    with LiveServer(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            answer = await http.get("/metrics")
    found = samples(answer.text)
    assert found["process_resident_memory_bytes"] and found["process_cpu_seconds_total"]
    assert found["python_info"][0]["version"] == platform.python_version()
    assert found["smsinbox_build_info"] == [
        {
            "version": __version__,
            "python_version": platform.python_version(),
            "engine": engine_of(settings.database_url),
        }
    ]
    assert "smsinbox_build_info{" in answer.text and "} 1.0" in answer.text


# --- request ids ---


@pytest.fixture
async def alice(services: Services) -> None:
    await services.accounts.add("alice", "alice-password", msisdns=(NUMBER,))


async def test_every_answer_carries_a_request_id(
    settings: Settings, services: Services, alice: None
) -> None:
    small_bodies = dataclasses.replace(settings, max_body_bytes=1024)
    with LiveServer(small_bodies) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            answers = [
                await http.get("/healthz"),
                await http.get("/no/such/page"),  # 404 from the router
                await http.delete("/healthz"),  # 405
                await http.get("/admin/accounts/alice/push"),  # a path with parameters
                await http.get("/services/rest/user/messages"),  # MC5's error, no login
                await http.get("/reception/get_inbox/1/1.1"),  # EAPI's error
                await http.post("/json/user/login", content=b"{"),  # mysms's error
                await http.get("/inbound/sms"),  # no upstream token
                await http.post("/inbound/sms", content=b"x" * 2048),  # 413
                await http.get("/signin"),  # the web inbox
            ]
    statuses = {answer.status_code for answer in answers}
    assert {200, 404, 405, 413} <= statuses
    ids = [answer.headers.get("x-request-id") for answer in answers]
    assert None not in ids
    assert len(set(ids)) == len(ids)  # one per request


async def test_a_sane_request_id_from_the_client_is_kept_and_others_are_replaced(
    settings: Settings, services: Services
) -> None:
    kept = ["abc-123", "0f3c2a9e-5b1d-4c6e-9a7f-1234567890ab", "x" * 128, "a!~/=:"]
    replaced: list[bytes] = [b"x" * 129, b"with space", b"caf\xc3\xa9", b""]
    with LiveServer(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            for chosen in kept:
                answer = await http.get("/healthz", headers={"X-Request-ID": chosen})
                assert answer.headers["x-request-id"] == chosen
            for insane in replaced:
                answer = await http.get("/healthz", headers=[(b"X-Request-ID", insane)])
                given = answer.headers["x-request-id"]
                assert given.encode() != insane
                assert re.fullmatch(r"[!-~]{1,128}", given)


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_the_request_log_carries_each_request_id(
    settings: Settings, services: Services, log_format: str
) -> None:
    written = io.StringIO()
    formatted = dataclasses.replace(settings, log_format=log_format)
    with LiveServer(formatted, request_log_to=written) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            await http.get("/healthz", headers={"X-Request-ID": "from-the-proxy"})
            generated = (await http.get("/no/such/page")).headers["x-request-id"]
            for _ in range(100):
                lines = written.getvalue().splitlines()
                if len(lines) >= 2:
                    break
                await asyncio.sleep(0.05)
    assert len(lines) == 2, written.getvalue()
    if log_format == "text":
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO smsinbox\.access 127\.0\.0\.1 GET"
            r" /healthz 200 \d+\.\dms request_id=from-the-proxy",
            lines[0],
        ), lines[0]
        assert " GET /no/such/page 404 " in lines[1]
        assert lines[1].endswith(f"ms request_id={generated}")
        return
    first, second = (json.loads(line) for line in lines)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert first | {"time": "", "duration_ms": 0} == {
        "time": "",
        "level": "INFO",
        "logger": "smsinbox.access",
        "client": "127.0.0.1",
        "method": "GET",
        "path": "/healthz",
        "status": 200,
        "duration_ms": 0,
        "request_id": "from-the-proxy",
    }
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    assert (second["path"], second["status"], second["request_id"]) == (
        "/no/such/page",
        404,
        generated,
    )


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_request_log_line_stays_one_line_whatever_the_path(log_format: str) -> None:
    written = io.StringIO()
    request_log = RequestLog(written, json=log_format == "json")
    forged = '/a\n2026-01-01 00:00:00,000 ERROR smsinbox forged "quoted" \\ é\x01'
    request_log.line("127.0.0.1", "GET", forged, 404, 0.0015, b'id-"\\')
    request_log.close()
    lines = written.getvalue().splitlines()
    assert len(lines) == 1
    if log_format == "json":
        fields = json.loads(lines[0])
        assert (fields["path"], fields["request_id"]) == (forged, 'id-"\\')
        assert (fields["status"], fields["duration_ms"]) == (404, 1.5)
    else:
        assert " GET /a\\n2026-01-01 00:00:00,000 ERROR smsinbox forged " in lines[0]


class Collected(logging.Handler):
    """The records logged while it is attached to the root logger, as JSON lines show them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.addFilter(RequestIdFilter())
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@contextlib.contextmanager
def collected() -> Iterator[Collected]:
    handler = Collected()
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)


async def test_a_warning_logged_while_handling_a_request_names_the_request() -> None:
    with collected() as records, LiveServer(unreachable_store()) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            answer = await http.get(
                "/inbound/sms",
                params={"token": "t", "from": "1", "to": "2"},
                headers={"X-Request-ID": "outage-1"},
            )
    assert answer.status_code == 503
    lookup = [line for line in records.lines if "find_upstream" in line["message"]]
    assert lookup and lookup[0]["request_id"] == "outage-1"
    assert "store unavailable" in lookup[0]["message"]
    # The server's own loops meet the outage too, in no request.
    background = [line for line in records.lines if "claim_due_deliveries" in line["message"]]
    assert background and all("request_id" not in line for line in background)


def test_a_json_line_carries_a_traceback_as_one_string() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        record = logging.LogRecord(
            "smsinbox.push", logging.ERROR, __file__, 1, "pass %s failed", ("7",), sys.exc_info()
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    fields = json.loads(line)
    assert fields["message"] == "pass 7 failed" and fields["level"] == "ERROR"
    assert fields["exc_info"].startswith("Traceback") and "ValueError: broken" in fields["exc_info"]
    assert "request_id" not in fields  # logged outside any request


async def test_the_event_stream_still_streams_with_a_request_id(
    settings: Settings, services: Services, alice: None
) -> None:
    with LiveServer(settings) as server:
        async with WebClient(server.url) as browser:
            assert (await browser.sign_in("alice", "alice-password")).status_code == 303
            headers = {"X-Request-ID": "page-events-1"}
            async with browser.http.stream("GET", "/events", headers=headers) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                assert stream.headers["x-request-id"] == "page-events-1"
                await services.ingestor.accept(
                    RawInbound(sender="447700900123", recipient=NUMBER, text=b"live"),
                    upstream_id=None,
                )
                event = await asyncio.wait_for(first_event(stream.aiter_lines()), 10)
    assert event.startswith("message")


async def first_event(lines: AsyncIterator[str]) -> str:
    async for line in lines:
        if line.startswith("event:"):
            return line.removeprefix("event:").strip()
    raise AssertionError("the stream ended")


# --- the processes, as an operator runs them ---


def environment(database_url: str, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSINBOX_")}
    env.update(
        SMSINBOX_DATABASE_URL=database_url,
        SMSINBOX_HOST="127.0.0.1",
        SMSINBOX_LOG_LEVEL="info",
        **{f"SMSINBOX_{name.upper()}": value for name, value in settings.items()},
    )
    return env


@pytest.fixture
def sqlite_store(tmp_path: Path) -> str:
    """A SQLite store made as an operator makes one: `smsinbox db upgrade`."""
    url = f"sqlite:///{tmp_path / 'smsinbox.db'}"
    made = subprocess.run(
        [sys.executable, "-m", "smsinbox", "db", "upgrade"],
        env=environment(url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    return url


@contextlib.contextmanager
def running(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m smsinbox ARGS`, its stderr in `log`; killed if the test did not stop it."""
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "smsinbox", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, as a service manager stops it; its exit status."""
    process.send_signal(signal.SIGTERM)
    return process.wait(30)


# uvicorn stops gracefully on SIGTERM, then raises the signal again: the process ends by it.
STOPPED_BY_SIGTERM = -signal.SIGTERM


def answering(url: str, process: subprocess.Popen[bytes]) -> httpx.Response | None:
    assert process.poll() is None, f"the process exited with {process.returncode}"
    try:
        return httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None


def complete_lines(log: Path) -> list[str]:
    """The lines written so far, without one still being written."""
    text = log.read_text()
    return text[: text.rfind("\n") + 1].splitlines()


def test_serve_writes_every_line_as_json_with_request_ids(
    sqlite_store: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    env = environment(sqlite_store, log_format="json", port=str(port))
    with running(["serve"], env, log) as process:
        within(30, lambda: answering(f"{url}/healthz", process), "serve answers")
        chosen = httpx.get(f"{url}/healthz", headers={"X-Request-ID": "req-json-1"})
        assert chosen.headers["x-request-id"] == "req-json-1"
        generated = httpx.get(f"{url}/no/such/page").headers["x-request-id"]
        insane = httpx.get(f"{url}/healthz", headers={"X-Request-ID": "a b"})
        assert insane.headers["x-request-id"] not in ("a b", generated)
        ids = {"req-json-1", generated, insane.headers["x-request-id"]}

        def logged_requests() -> list[dict[str, object]] | None:
            lines = [json.loads(line) for line in complete_lines(log)]
            access = [line for line in lines if line["logger"] == "smsinbox.access"]
            return access if {line["request_id"] for line in access} >= ids else None

        within(10, logged_requests, "the request log's lines")
        assert stop(process) == STOPPED_BY_SIGTERM
    records = [json.loads(line) for line in log.read_text().splitlines()]  # every line
    assert all(record["time"].endswith("Z") and record["level"] for record in records)
    uvicorn = [record["message"] for record in records if record["logger"].startswith("uvicorn")]
    assert "Application startup complete." in uvicorn
    assert f"Uvicorn running on {url} (Press CTRL+C to quit)" in uvicorn
    assert "Shutting down" in uvicorn and "Application shutdown complete." in uvicorn
    access = [record for record in records if record["logger"] == "smsinbox.access"]
    first = next(record for record in access if record["request_id"] == "req-json-1")
    assert (first["method"], first["path"], first["status"]) == ("GET", "/healthz", 200)


def test_serve_text_lines_keep_their_shape_and_gain_the_request_id(
    sqlite_store: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with running(["serve"], environment(sqlite_store, port=str(port)), log) as process:
        within(30, lambda: answering(f"{url}/healthz", process), "serve answers")
        httpx.get(f"{url}/healthz", params={"password": "secret"}, headers={"X-Request-ID": "t-1"})

        def request_line() -> str | None:
            found = [line for line in complete_lines(log) if "smsinbox.access" in line]
            return found[-1] if found and found[-1].endswith("request_id=t-1") else None

        line = within(10, request_line, "the request log's line")
        assert stop(process) == STOPPED_BY_SIGTERM
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO smsinbox\.access 127\.0\.0\.1 GET /healthz 200"
        r" \d+\.\dms request_id=t-1",
        line,
    ), line
    lines = log.read_text().splitlines()
    assert all(TEXT_LINE.fullmatch(line) for line in lines), lines
    assert any(" INFO uvicorn.error Application startup complete." in line for line in lines)
    assert "secret" not in log.read_text()


async def test_the_worker_serves_its_metrics_logs_json_and_stops_on_sigterm(
    sqlite_store: str, tmp_path: Path
) -> None:
    receiver = Receiver().start()
    setup = Services.build(Settings(database_url=sqlite_store, push_allow_private=True))
    await setup.start()
    try:
        await setup.accounts.add("alice", "pw", msisdns=(NUMBER,))
        await setup.push.add("alice", receiver.url)
        await setup.ingestor.accept(
            RawInbound(sender="447700900123", recipient=NUMBER, text=b"to push"), upstream_id=None
        )
    finally:
        await setup.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    env = environment(
        sqlite_store, worker_metrics_port=str(port), push_allow_private="true", log_format="json"
    )
    log = tmp_path / "worker.log"
    try:
        with running(["worker"], env, log) as process:
            delivered = 'smsinbox_push_deliveries_total{outcome="delivered"} 1.0'

            def scraped() -> str | None:
                answer = answering(url, process)
                return answer.text if answer is not None and delivered in answer.text else None

            exposition = await asyncio.to_thread(within, 30, scraped, "the delivery counted")
            assert receiver.received and receiver.received[0].body
            found = samples(exposition)
            assert found["smsinbox_push_attempt_duration_seconds_count"]
            assert found["process_resident_memory_bytes"] and found["python_info"]
            assert found["smsinbox_build_info"][0]["engine"] == "sqlite"
            # What only a server fills or reads is not the worker's to show.
            assert "smsinbox_http_request_duration_seconds" not in exposition
            assert "smsinbox_push_queue_depth" not in exposition
            assert await asyncio.to_thread(stop, process) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(url, timeout=2)
    finally:
        receiver.stop()
    records = [json.loads(line) for line in log.read_text().splitlines()]  # every line
    worker_lines = [record for record in records if record["logger"] == "smsinbox.worker"]
    assert worker_lines[0]["message"] == f"serving /metrics on 127.0.0.1:{port}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", worker_lines[0]["time"])


def test_a_worker_whose_metrics_port_is_taken_says_so(sqlite_store: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = subprocess.run(
            [sys.executable, "-m", "smsinbox", "worker"],
            env=environment(sqlite_store, worker_metrics_port=str(port)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert refused.returncode == 1
    assert f"error: worker_metrics_port: cannot listen on 127.0.0.1:{port}" in refused.stderr
