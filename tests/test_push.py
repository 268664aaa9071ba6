"""Push delivery to a real receiver on loopback: formats, signatures, retries, disabling."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
from standardwebhooks import Webhook

from smsinbox.config import Settings
from smsinbox.core.ingest import RawInbound
from smsinbox.errors import InvalidInput
from smsinbox.push.worker import PushWorker
from smsinbox.services import Services
from tests.conftest import LiveServer
from tests.receiver import Receiver

NUMBER = "447700900001"
FAST = "0,0.2,0.2,0.2"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        push_allow_private=True,
        push_retry_schedule=FAST,
        push_retry_jitter=0.0,
        admin_token="admin-secret",
    )


@pytest.fixture
async def upstream(services: Services) -> str:
    await services.accounts.add("alice", "pw", msisdns=(NUMBER,), time_zone="Europe/London")
    _, token = await services.upstreams.create("kannel")
    return token


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as client:
        yield client


async def deliver_sms(http: httpx.AsyncClient, token: str, text: str, **extra: str) -> int:
    response = await http.get(
        "/inbound/sms",
        params={"token": token, "from": "447700900123", "to": NUMBER, "text": text, **extra},
    )
    assert response.status_code == 200
    return int(response.headers["x-smsinbox-id"])


async def wait(receiver: Receiver, count: int) -> list:  # type: ignore[type-arg]
    return await asyncio.to_thread(receiver.wait_for, count)


async def logged(services: Services, count: int, *, failed_only: bool = False) -> list:  # type: ignore[type-arg]
    """The attempt log once it holds `count` attempts (they are recorded after the answer)."""
    for _ in range(500):
        attempts = await services.push.attempts("alice", failed_only=failed_only)
        if len(attempts) >= count:
            return attempts
        await asyncio.sleep(0.02)
    raise AssertionError(f"the attempt log never reached {count} entries")


@contextlib.asynccontextmanager
async def running(*workers: PushWorker) -> AsyncIterator[None]:
    """The workers' own loops (as `smsinbox serve` runs them) while the block runs."""
    stop = asyncio.Event()
    loops = [asyncio.create_task(worker.run(stop)) for worker in workers]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*loops)


async def metrics_showing(http: httpx.AsyncClient, sample: str) -> str:
    """The /metrics exposition once it holds `sample`."""
    for _ in range(250):
        metrics = (await http.get("/metrics")).text
        if sample in metrics:
            return metrics
        await asyncio.sleep(0.02)
    raise AssertionError(f"/metrics never showed {sample}")


async def test_standard_push_is_signed_and_verifies(
    services: Services, upstream: str, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await services.push.add("alice", receiver.url)
    assert endpoint.secret is not None and endpoint.secret.startswith("whsec_")
    message_id = await deliver_sms(http, upstream, "Hello ☺")
    [push] = await wait(receiver, 1)
    assert push.method == "POST"
    payload = Webhook(endpoint.secret).verify(push.body, push.headers)
    assert payload["type"] == "message.received"
    data = payload["data"]
    assert (data["id"], data["from"], data["to"], data["text"], data["encoding"]) == (
        str(message_id), "447700900123", NUMBER, "Hello ☺", "7bit",
    )  # fmt: skip
    assert data["sequence"] == 1 and data["replyTo"] is None
    assert push.headers["webhook-id"] == f"msg_{1}"
    tampered = push.body.replace(b"Hello", b"Jello")
    with pytest.raises(Exception, match="signature"):
        Webhook(endpoint.secret).verify(tampered, push.headers)


async def test_mc5_and_eapi_formats(
    services: Services, upstream: str, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await services.push.add("alice", receiver.url, format="mc5")
    await services.push.add("alice", receiver.url, format="eapi")
    message_id = await deliver_sms(http, upstream, "Grüße", time="")
    pushes = await wait(receiver, 2)
    by_format = {("MOMessageId" in p.params): p for p in pushes}
    mc5, eapi = by_format[True], by_format[False]
    assert mc5.method == eapi.method == "GET"
    assert mc5.params == {
        "MOMessageId": str(message_id), "MTMessageId": "", "timestamp": mc5.params["timestamp"],
        "from": "447700900123", "to": NUMBER, "text": "Grüße",
    }  # fmt: skip
    assert eapi.params["msisdn"] == NUMBER and eapi.params["sender"] == "447700900123"
    assert (eapi.params["message"], eapi.params["dca"]) == ("Grüße", "7bit")
    assert eapi.params["msg_id"] == str(message_id)
    assert eapi.params["referring_batch_id"] == "0"
    assert len(eapi.params["received_time"]) == 19


async def test_eapi_push_needs_a_non_empty_answer(
    services: Services, upstream: str, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await services.push.add("alice", receiver.url, format="eapi")
    receiver.script.append((200, b"", {}))  # empty body: not accepted on that platform
    await deliver_sms(http, upstream, "retry me")
    pushes = await wait(receiver, 2)
    assert pushes[0].params == pushes[1].params
    log = await logged(services, 1, failed_only=True)
    assert [a.error for a in log] == ["HTTP 200 with an empty body"]


async def test_a_failing_receiver_gets_the_message_after_retries(
    services: Services, upstream: str, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await services.push.add("alice", receiver.url)
    receiver.script.extend([(500, b"", {}), (503, b"", {"Retry-After": "0"}), (429, b"", {})])
    await deliver_sms(http, upstream, "persist")
    pushes = await wait(receiver, 4)
    assert len({p.headers["webhook-id"] for p in pushes}) == 1  # one delivery, same id
    attempts = await logged(services, 4)
    assert [a.http_status for a in reversed(attempts)] == [500, 503, 429, 200]
    assert attempts[0].state == "delivered"


@pytest.mark.parametrize("retry_after", ["\u00b2", "-1", "1e3", "soon", " "])
async def test_a_retry_after_that_is_no_number_of_seconds_or_date_is_ignored(
    services: Services,
    upstream: str,
    http: httpx.AsyncClient,
    receiver: Receiver,
    retry_after: str,
) -> None:
    await services.push.add("alice", receiver.url)
    receiver.script.append((503, b"", {"Retry-After": retry_after}))
    await deliver_sms(http, upstream, "odd header")
    await wait(receiver, 2)  # retried on the schedule, as if the header were absent
    attempts = await logged(services, 2)
    assert [a.http_status for a in reversed(attempts)] == [503, 200]
    assert attempts[0].state == "delivered"


async def test_retries_end_in_a_dead_letter_that_replay_revives(
    services: Services, upstream: str, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await services.push.add("alice", receiver.url)
    receiver.default = (500, b"", {})
    await deliver_sms(http, upstream, "doomed")
    await wait(receiver, 4)  # the whole schedule
    attempts = await logged(services, 4, failed_only=True)
    await asyncio.sleep(0.5)
    assert len(receiver.received) == 4
    assert attempts[0].state == "dead"
    receiver.default = (200, b"OK", {})
    assert await services.push.replay("alice", "0") == 1
    pushes = await wait(receiver, 5)
    assert pushes[-1].headers["webhook-id"] == pushes[0].headers["webhook-id"]


async def test_410_disables_the_endpoint(
    services: Services, upstream: str, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await services.push.add("alice", receiver.url)
    receiver.default = (410, b"gone", {})
    await deliver_sms(http, upstream, "anyone?")
    await wait(receiver, 1)
    for _ in range(200):
        [listed] = await services.push.endpoints_of("alice")
        if not listed.enabled:
            break
        await asyncio.sleep(0.02)
    assert (listed.id, listed.enabled) == (endpoint.id, False)
    assert listed.disabled_reason == "receiver answered 410 Gone"
    await deliver_sms(http, upstream, "not pushed")
    await asyncio.sleep(0.5)
    assert len(receiver.received) == 1


async def test_private_addresses_are_refused_unless_allowed(
    services: Services, upstream: str
) -> None:
    services.push.addresses.allow_private = False
    for url in ["http://127.0.0.1:9/hook", "http://10.0.0.1/x", "http://[::1]/", "ftp://x/",
                "http://100.64.1.1/", "http://169.254.169.254/latest"]:  # fmt: skip
        with pytest.raises(InvalidInput):
            await services.push.add("alice", url)


async def test_two_workers_never_send_the_same_attempt(
    settings: Settings, services: Services, upstream: str, receiver: Receiver
) -> None:
    await services.push.add("alice", receiver.url)
    from smsinbox.core.ingest import RawInbound

    for i in range(30):
        raw = RawInbound("447700900123", NUMBER, text=f"m{i}".encode())
        await services.ingestor.accept(raw, upstream_id=None)
    other = Services.build(settings)
    try:
        async with running(services.push_worker, other.push_worker):
            await logged(services, 30)
            await asyncio.sleep(0.3)  # a second send of any would arrive meanwhile
    finally:
        await other.close()
    counts = Counter(p.headers["webhook-id"] for p in await wait(receiver, 30))
    assert len(counts) == 30 and set(counts.values()) == {1}
    assert len(receiver.received) == 30


async def test_admin_api_manages_endpoints(
    services: Services, upstream: str, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    auth = {"Authorization": "Bearer admin-secret"}
    assert (await http.get("/admin/accounts/alice/push")).status_code == 401
    created = await http.post(
        "/admin/accounts/alice/push", json={"url": receiver.url, "format": "mc5"}, headers=auth
    )
    assert created.status_code == 201 and created.json()["format"] == "mc5"
    listed = (await http.get("/admin/accounts/alice/push", headers=auth)).json()["endpoints"]
    assert [e["id"] for e in listed] == [created.json()["id"]]
    bad = await http.post("/admin/accounts/alice/push", json={"url": ""}, headers=auth)
    assert bad.status_code == 400
    missing = await http.get("/admin/accounts/nobody/push", headers=auth)
    assert missing.status_code == 404
    await deliver_sms(http, upstream, "via admin")
    await wait(receiver, 1)
    for _ in range(200):
        attempts = (await http.get("/admin/accounts/alice/push/deliveries", headers=auth)).json()[
            "attempts"
        ]
        if attempts:
            break
        await asyncio.sleep(0.02)
    assert attempts[0]["httpStatus"] == 200 and attempts[0]["state"] == "delivered"
    replayed = await http.post("/admin/accounts/alice/push/replay", json={"since": 0}, headers=auth)
    assert replayed.json() == {"queued": 1}
    await wait(receiver, 2)
    removed = await http.delete(f"/admin/push/{created.json()['id']}", headers=auth)
    assert removed.status_code == 200
    assert (await http.get("/admin/accounts/alice/push", headers=auth)).json() == {"endpoints": []}


async def test_admin_api_is_absent_without_a_token(database_url: str) -> None:
    with LiveServer(Settings(database_url=database_url)) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            answer = await http.get(
                "/admin/accounts/alice/push", headers={"Authorization": "Bearer guess"}
            )
            assert answer.status_code == 404


async def test_status_events_follow_outgoing_messages(
    services: Services, upstream: str, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await services.push.add("alice", receiver.url, format="mc5", events="status")
    _, key = await services.api_keys.create("app")
    login = await http.post(
        "/json/user/login", json={"apiKey": key, "msisdn": int(NUMBER), "password": "pw"}
    )
    token = login.json()["authToken"]
    sent = await http.post(
        "/json/user/message/send",
        json={"apiKey": key, "authToken": token, "recipient": 4915112345, "message": "out"},
    )
    [push] = await wait(receiver, 1)
    assert push.params["id"] == str(sent.json()["messageId"])
    assert (push.params["status"], push.params["to"], push.params["numberOfParts"]) == (
        "pending", "4915112345", "1",
    )  # fmt: skip
    json.dumps(push.params)
    # 160 characters, ten of them '€' (two septets each): two short messages, not one.
    await http.post(
        "/json/user/message/send",
        json={"apiKey": key, "authToken": token, "recipient": 4915112345,
              "message": "a" * 150 + "€" * 10},
    )  # fmt: skip
    [long] = [push for push in await wait(receiver, 2) if push.params["text"] != "out"]
    assert long.params["numberOfParts"] == "2"


async def test_an_endpoint_failing_for_too_long_is_disabled_with_its_reason(
    services: Services, upstream: str, receiver: Receiver
) -> None:
    from smsinbox.core.ingest import RawInbound

    await services.push.add("alice", receiver.url)
    receiver.default = (500, b"", {})
    worker = services.push_worker
    # The message is queued at the ingest clock; the worker's clock must not be behind it.
    now = services.ingestor.clock() + 1_000
    services.ingestor.clock = lambda: now - 1_000
    worker.clock = lambda: now
    async with running(worker):
        await services.ingestor.accept(RawInbound("1", NUMBER, text=b"first"), upstream_id=None)
        # It fails, and the endpoint starts failing now; with the clock still, no retry is due.
        await logged(services, 1, failed_only=True)
        worker.clock = lambda: now + worker.disable_after_ms + 60_000
        await services.ingestor.accept(RawInbound("1", NUMBER, text=b"later"), upstream_id=None)
        for _ in range(250):
            [endpoint] = await services.push.endpoints_of("alice")
            if not endpoint.enabled:
                break
            await asyncio.sleep(0.02)
    assert not endpoint.enabled
    assert endpoint.disabled_reason is not None and "HTTP 500" in endpoint.disabled_reason
    states = {a.state for a in await services.push.attempts("alice", failed_only=True)}
    assert states == {"dead"}  # nothing left pending for a disabled endpoint


async def test_push_metrics_are_exposed(
    services: Services, upstream: str, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await services.push.add("alice", receiver.url)
    await deliver_sms(http, upstream, "count me")
    await wait(receiver, 1)
    await logged(services, 1)
    # The worker counts an outcome once its record has committed, on its own task: the
    # attempt log can show the attempt a moment before the counter does.
    metrics = await metrics_showing(http, 'smsinbox_push_deliveries_total{outcome="delivered"} 1.0')
    assert "smsinbox_push_attempt_duration_seconds_count 1.0" in metrics
    assert "smsinbox_push_queue_depth 0.0" in metrics
    assert "smsinbox_push_oldest_undelivered_seconds 0.0" in metrics


async def test_eapi_endpoints_carry_incoming_messages_only(
    services: Services, upstream: str
) -> None:
    with pytest.raises(InvalidInput, match="incoming messages only"):
        await services.push.add("alice", "http://127.0.0.1:9/", format="eapi", events="status")


async def test_a_delivery_whose_message_was_pruned_is_dead_lettered(
    services: Services, upstream: str, receiver: Receiver
) -> None:
    from smsinbox.core.ingest import RawInbound
    from smsinbox.core.retention import Retention

    await services.push.add("alice", receiver.url)
    for text in (b"old", b"new"):
        await services.ingestor.accept(RawInbound("1", NUMBER, text=text), upstream_id=None)
    keeper = Retention(services.store, max_messages=1, max_age_days=0, interval_s=1)
    assert (await keeper.prune_once()).by_count == 1
    async with running(services.push_worker):
        [push] = await wait(receiver, 1)
        await logged(services, 1)
    assert (await services.store.queue_figures())[0] == 0
    assert json.loads(push.body)["data"]["text"] == "new"


async def test_a_worker_wakes_at_once_for_messages_stored_elsewhere(
    settings: Settings,
    services: Services,
    upstream: str,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process's commit wakes the worker: PostgreSQL's NOTIFY, or, on SQLite, the
    store of the same process. The worker's idle look is made a minute long here, so only a
    wake-up can deliver within the test's patience."""
    from smsinbox.core.ingest import RawInbound
    from smsinbox.push import worker as worker_module

    await services.push.add("alice", receiver.url)
    original_sleep = worker_module.PushWorker._sleep

    async def long_idle(self: object, stop: asyncio.Event, seconds: float) -> None:
        await original_sleep(self, stop, 60.0 if seconds >= 1 else seconds)  # type: ignore[arg-type]

    monkeypatch.setattr(worker_module.PushWorker, "_sleep", long_idle)
    writer = Services.build(settings) if services.store.db.kind == "postgresql" else services
    stop = asyncio.Event()
    running = asyncio.create_task(services.push_worker.run(stop))
    try:
        await asyncio.sleep(0.5)  # the worker is idle, listening
        raw = RawInbound("447700900123", NUMBER, text=b"wake up")
        await writer.ingestor.accept(raw, upstream_id=None)
        [push] = await wait(receiver, 1)
        assert json.loads(push.body)["data"]["text"] == "wake up"
    finally:
        stop.set()
        await running
        if writer is not services:
            await writer.close()


async def test_next_due_is_the_first_delivery_due_after_the_given_time(
    services: Services, upstream: str
) -> None:
    # The worker asks only for what falls due later: deliveries already due are either
    # claimable (its claim took them) or held by another worker's claim.
    await services.push.add("alice", "http://127.0.0.1:9/never")
    services.ingestor.clock = lambda: 1_000
    for text in (b"first", b"second"):
        await services.ingestor.accept(
            RawInbound("447700900123", NUMBER, text=text), upstream_id=None
        )
    store = services.store
    assert await store.next_due_at(after=1_000) is None  # both due at 1,000
    assert await store.next_due_at(after=999) == 1_000
    claimed = await store.claim_due_deliveries(now=2_000, lease_ms=5_000, limit=1, per_endpoint=1)
    assert len(claimed) == 1  # leased: due again at 7,000 unless its outcome comes first
    assert await store.next_due_at(after=2_000) == 7_000
    assert await store.next_due_at(after=7_000) is None
