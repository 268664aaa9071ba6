"""The upstream endpoint over a real socket, as Kannel and HTTP upstreams call it."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import re
from urllib.parse import quote_from_bytes, urlencode

import httpx
import pytest

from smsinbox.config import Settings
from smsinbox.models import Encoding
from smsinbox.services import Services
from tests.conftest import LiveServer, unreachable_store

NUMBER = "447700900001"


@pytest.fixture
async def token(services: Services) -> str:
    await services.accounts.add("alice", "pw", msisdns=(NUMBER,))
    _, secret = await services.upstreams.create("kannel")
    return secret


@pytest.fixture
async def client(live_server: LiveServer) -> httpx.AsyncClient:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        yield http  # type: ignore[misc]


def kannel_query(token: str, *, text: bytes, coding: str, charset: str, id: str) -> str:
    """What Kannel's get-url expands to: each placeholder URL-encoded from raw octets."""
    return (
        f"/inbound/sms?token={token}&from=%2B447700900123&to={NUMBER}"
        f"&text={quote_from_bytes(text)}&coding={coding}&charset={charset}&id={id}"
    )


async def stored(services: Services) -> list[tuple[str, str, Encoding, bytes | None]]:
    messages = await services.store.list_recent_messages("alice", 100)
    return [(m.sender, m.text, m.encoding, m.body) for m in reversed(messages)]


async def test_kannel_get_url_is_accepted_with_an_empty_200(
    client: httpx.AsyncClient, services: Services, token: str
) -> None:
    for text, coding, charset in [
        (b"Hi there", "0", "UTF-8"),
        ("Grüße ☺".encode("utf-16-be"), "2", "UTF-16BE"),
        (b"\x00\xff\x10binary", "1", ""),
    ]:
        response = await client.get(
            kannel_query(token, text=text, coding=coding, charset=charset, id=f"k{coding}")
        )
        assert response.status_code == 200
        assert response.content == b""  # anything else Kannel would send back as an SMS
    assert await stored(services) == [
        ("447700900123", "Hi there", Encoding.GSM7, None),
        ("447700900123", "Grüße ☺", Encoding.UCS2, None),
        ("447700900123", "\ufffd\xff\x10binary", Encoding.BINARY, b"\x00\xff\x10binary"),
    ]


async def test_form_post_and_bearer_token(
    client: httpx.AsyncClient, services: Services, token: str
) -> None:
    response = await client.post(
        "/inbound/sms",
        data={"from": "447700900123", "to": NUMBER, "text": "posted ☺"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    assert response.headers["x-smsinbox-outcome"] == "stored"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["content-length"] == "0"
    assert [text for _, text, _, _ in await stored(services)] == ["posted ☺"]


async def test_8bit_hex_round_trip_over_http(
    client: httpx.AsyncClient, services: Services, token: str
) -> None:
    payload = "234f345a324b6b523a"
    response = await client.get(
        "/inbound/sms",
        params={"token": token, "from": "1", "to": NUMBER, "hex": payload, "encoding": "8bit"},
    )
    assert response.status_code == 200
    [(_, _, encoding, body)] = await stored(services)
    assert encoding is Encoding.BINARY and body is not None and body.hex() == payload


async def test_duplicate_upstream_id_is_acknowledged_and_stored_once(
    client: httpx.AsyncClient, services: Services, token: str
) -> None:
    query = {"token": token, "from": "447700900123", "to": NUMBER, "text": "once", "id": "m-1"}
    first = await client.get("/inbound/sms", params=query)
    second = await client.get("/inbound/sms", params=query)
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.headers["x-smsinbox-outcome"] == "duplicate"
    assert second.headers["x-smsinbox-id"] == first.headers["x-smsinbox-id"]
    assert len(await stored(services)) == 1


async def test_unrouted_message_is_acknowledged_and_kept(
    client: httpx.AsyncClient, services: Services, token: str
) -> None:
    response = await client.get(
        "/inbound/sms", params={"token": token, "from": "1", "to": "15550001", "text": "who?"}
    )
    assert response.status_code == 200
    assert response.headers["x-smsinbox-outcome"] == "unrouted"
    assert "x-smsinbox-id" not in response.headers
    [waiting] = await services.store.list_unrouted()
    assert waiting.text == "who?"
    assert response.headers["x-smsinbox-unrouted-id"] == str(waiting.id)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ({"from": "1", "text": "x"}, "missing required parameter 'to'"),
        ({"from": "1", "to": "12ab", "text": "x"}, "to must be a phone number"),
        ({"from": "1", "to": NUMBER, "text": "x", "coding": "7"}, "coding must be 0, 1 or 2"),
        ({"from": "1", "to": NUMBER, "hex": "abc", "coding": "1"}, "even number"),
        ({"from": "1", "to": NUMBER, "text": "x", "charset": "nope"}, "unknown charset"),
        ({"from": "1", "to": NUMBER, "text": "x", "ref": "'; DROP TABLE messages;--"}, "ref"),
    ],
)
async def test_bad_input_gets_a_400_with_one_line_and_stores_nothing(
    client: httpx.AsyncClient, services: Services, token: str, query: dict[str, str], reason: str
) -> None:
    response = await client.get("/inbound/sms?" + urlencode({"token": token, **query}))
    assert response.status_code == 400
    assert reason in response.text
    assert response.text.count("\n") == 1
    assert await stored(services) == [] and await services.store.list_unrouted() == []


async def test_invalid_utf8_in_a_parameter_is_a_400(
    client: httpx.AsyncClient, services: Services, token: str
) -> None:
    response = await client.get(f"/inbound/sms?token={token}&from=%FF%FE&to={NUMBER}&text=x")
    assert response.status_code == 400
    assert "from is not valid UTF-8" in response.text


async def test_missing_wrong_or_revoked_token_is_a_401(
    client: httpx.AsyncClient, services: Services, token: str
) -> None:
    base = {"from": "1", "to": NUMBER, "text": "x"}
    assert (await client.get("/inbound/sms", params=base)).status_code == 401
    wrong = await client.get("/inbound/sms", params={**base, "token": token[:-1]})
    assert wrong.status_code == 401
    await services.upstreams.revoke("kannel")
    revoked = await client.get("/inbound/sms", params={**base, "token": token})
    assert revoked.status_code == 401
    assert await stored(services) == []


async def test_a_running_server_refuses_a_token_revoked_elsewhere_within_its_memory(
    client: httpx.AsyncClient, services: Services, token: str
) -> None:
    """The server remembers a recognised token for credential_cache_ttl (2 s); a revoke
    from another process, as `smsinbox upstream revoke` is, reaches it when that lapses."""
    params = {"token": token, "from": "1", "to": NUMBER, "text": "x"}
    assert (await client.get("/inbound/sms", params=params)).status_code == 200
    await services.upstreams.revoke("kannel")
    deadline = asyncio.get_running_loop().time() + 30
    while (status := (await client.get("/inbound/sms", params=params)).status_code) == 200:
        assert asyncio.get_running_loop().time() < deadline, "the revoked token still works"
        await asyncio.sleep(0.2)
    assert status == 401


async def test_oversized_and_non_form_bodies_are_refused(
    client: httpx.AsyncClient, token: str
) -> None:
    huge = await client.post(
        "/inbound/sms", params={"token": token}, content=b"text=" + b"x" * 300_000
    )
    assert huge.status_code == 413
    json_body = await client.post(
        "/inbound/sms",
        params={"token": token},
        json={"from": "1", "to": NUMBER},
    )
    assert json_body.status_code == 415


async def test_health_readiness_and_metrics(
    client: httpx.AsyncClient, services: Services, token: str
) -> None:
    assert (await client.get("/healthz")).text == "ok\n"
    assert (await client.get("/readyz")).status_code == 200
    await client.get("/inbound/sms", params={"token": token, "from": "1", "to": NUMBER})
    await client.get("/inbound/sms", params={"token": token, "from": "1", "to": "999"})
    await client.get("/inbound/sms", params={"token": token, "from": "1", "to": "x"})
    metrics = (await client.get("/metrics")).text
    assert 'smsinbox_messages_ingested_total{outcome="stored"} 1.0' in metrics
    assert 'smsinbox_messages_ingested_total{outcome="unrouted"} 1.0' in metrics
    assert 'smsinbox_messages_ingested_total{outcome="rejected"} 1.0' in metrics
    assert "smsinbox_unrouted_messages 1.0" in metrics
    assert 'smsinbox_http_request_duration_seconds_count{method="GET",route="inbound_sms"' in (
        metrics
    )


async def request_lines(written: io.StringIO, count: int) -> list[str]:
    """The request log's lines once it has written `count` (it writes in batches)."""
    for _ in range(100):
        lines = written.getvalue().splitlines()
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.05)
    raise AssertionError(f"the request log never wrote {count} lines: {written.getvalue()!r}")


async def test_request_log_has_one_line_per_request_and_no_secrets(
    settings: Settings, services: Services, token: str
) -> None:
    written = io.StringIO()
    with LiveServer(settings, request_log_to=written) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            await http.get(
                "/inbound/sms", params={"token": token, "from": "1", "to": NUMBER, "text": "x"}
            )
            await http.post(
                "/inbound/sms",
                data={"from": "1", "to": NUMBER, "text": "y"},
                headers={"Authorization": f"Bearer {token}"},
            )
            await http.get("/admin/accounts/alice/push", headers={"Authorization": "Bearer x"})
            lines = await request_lines(written, 3)
    assert len(lines) == 3
    # The format of every other log line: date, time with milliseconds, level, logger.
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO smsinbox\.access 127\.0\.0\.1 GET"
        r" /inbound/sms 200 \d+\.\dms request_id=[0-9a-f]{12}-[0-9a-f]+",
        lines[0],
    ), lines[0]
    assert " POST /inbound/sms 200 " in lines[1]
    assert " GET /admin/accounts/alice/push 404 " in lines[2]  # parameters; admin API off
    assert token not in written.getvalue()


async def test_request_log_can_be_turned_off_and_requests_are_still_measured(
    settings: Settings, services: Services, token: str
) -> None:
    quiet = dataclasses.replace(settings, access_log=False)
    written = io.StringIO()
    with LiveServer(quiet, request_log_to=written) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            stored = await http.get(
                "/inbound/sms", params={"token": token, "from": "1", "to": NUMBER, "text": "x"}
            )
            assert stored.status_code == 200
            metrics = (await http.get("/metrics")).text
    await asyncio.sleep(0.3)  # longer than the request log waits to write
    assert written.getvalue() == ""
    assert (
        'smsinbox_http_request_duration_seconds_count{method="GET",route="inbound_sms",'
        'status="200"} 1.0' in metrics
    )


async def test_readiness_fails_when_the_database_is_unreachable() -> None:
    with LiveServer(unreachable_store()) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            inbound = await http.get("/inbound/sms", params={"token": "t", "from": "1", "to": "2"})
            assert inbound.status_code == 503
            assert inbound.headers["retry-after"] == "5"
