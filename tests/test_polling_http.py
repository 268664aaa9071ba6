"""MC5 and EAPI polling over a real socket: exact bytes and every status code."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import httpx
import pytest

from smsinbox.errors import StoreUnavailable
from smsinbox.services import Services
from tests.conftest import LiveServer, unreachable_store
from tests.polling_data import PASSWORD, load_inbox

MC5 = "/services/rest/user/messages"
MC5_ALL = "/services/rest/user/allMessages"
EAPI = "/eapi/reception/get_inbox/1/1.1"
EAPI_10 = "/eapi/reception/get_inbox/1/1.0"


@pytest.fixture
async def client(services: Services, live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    await load_inbox(services)
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        yield http


MC5_PAGE = (
    '{"newestMessageTimestamp":1310000000,"messages":['
    '{"from":"4412312345","recipient":"447700900001","documentId":"2",'
    '"originDocumentId":"1","timestamp":1295539600,"text":"Hi there"},'
    '{"from":"4412312346","recipient":"447700900001","documentId":"3",'
    '"originDocumentId":null,"timestamp":1295539655,"text":"#O4Z2KkR:"},'
    '{"from":"4412312399","recipient":"447700900001","documentId":"4",'
    '"originDocumentId":null,"timestamp":1295539680,"text":"This is a Unicode message ☺"},'
    '{"from":"4412312345","recipient":"447700900001","documentId":"5",'
    '"originDocumentId":null,"timestamp":1310000000,"text":"two\\nlines | pipe"}],'
    '"status":0,"hasMoreMessages":false}'
)


async def test_mc5_page_exact_bytes(client: httpx.AsyncClient) -> None:
    response = await client.get(MC5, params={"username": "alice", "password": PASSWORD, "since": 0})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == MC5_PAGE.encode()


async def test_mc5_post_form_gives_the_same_page(client: httpx.AsyncClient) -> None:
    response = await client.post(
        MC5, data={"username": "alice", "password": PASSWORD, "since": "0"}
    )
    assert response.content == MC5_PAGE.encode()


async def test_mc5_all_messages_include_outgoing_without_from(client: httpx.AsyncClient) -> None:
    response = await client.get(
        MC5_ALL, params={"username": "alice", "password": PASSWORD, "since": 1295539539}
    )
    assert response.content.startswith(
        b'{"newestMessageTimestamp":1310000000,"messages":['
        b'{"recipient":"4412312345","documentId":"1","originDocumentId":null,'
        b'"timestamp":1295539540,"text":"question?"},'
        b'{"from":"4412312345","recipient":"447700900001","documentId":"2",'
    )
    assert len(response.json()["messages"]) == 5


async def test_mc5_since_is_exclusive_and_echoed_when_nothing_is_newer(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        MC5, params={"username": "alice", "password": PASSWORD, "since": 1310000000}
    )
    assert response.content == (
        b'{"newestMessageTimestamp":1310000000,"messages":[],"status":0,"hasMoreMessages":false}'
    )
    response = await client.get(
        MC5, params={"username": "alice", "password": PASSWORD, "since": 1309999999}
    )
    assert [m["documentId"] for m in response.json()["messages"]] == ["5"]


async def test_mc5_marks_incoming_messages_retrieved(
    client: httpx.AsyncClient, services: Services
) -> None:
    before = {m.id: m.status for m in await services.store.list_recent_messages("alice", 10)}
    assert before == {1: "complete", 2: "received", 3: "received", 4: "received", 5: "received"}
    await client.get(MC5, params={"username": "alice", "password": PASSWORD, "since": 1295539654})
    after = {m.id: m.status for m in await services.store.list_recent_messages("alice", 10)}
    assert after == {1: "complete", 2: "received", 3: "retrieved", 4: "retrieved", 5: "retrieved"}


async def test_the_server_raises_a_pollers_watermark_ahead_of_each_second(
    client: httpx.AsyncClient,
) -> None:
    """After a poll, the server's own task raises the account's watermark before the next
    second opens (core/inbox.py keep_watermarks), which its transaction counter shows."""
    await client.get(MC5, params={"username": "alice", "password": PASSWORD, "since": 0})
    deadline = asyncio.get_running_loop().time() + 5
    pattern = re.compile(
        r'^smsinbox_db_transaction_duration_seconds_count\{name="raise_watermarks",'
        r'result="ok"\} (\S+)$', re.M
    )  # fmt: skip
    while True:
        found = pattern.search((await client.get("/metrics")).text)
        if found and float(found.group(1)) >= 1:
            break
        assert asyncio.get_running_loop().time() < deadline, "no watermark raised in 5 s"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"password": PASSWORD, "since": "0"}, 1),
        ({"username": "alice", "since": "0"}, 1),
        ({"username": "alice", "password": PASSWORD}, 1),
        ({"username": "", "password": PASSWORD, "since": "0"}, 1),
        ({"username": "alice", "password": PASSWORD, "since": "yesterday"}, 2),
        ({"username": "alice", "password": PASSWORD, "since": "-1"}, 2),
        ({"username": "alice", "password": PASSWORD, "since": "1.5"}, 2),
        ({"username": "alice", "password": PASSWORD, "since": "9" * 30}, 2),
        ({"username": "alice", "password": PASSWORD, "since": "9" * 5000}, 2),
        ({"username": "al ice", "password": PASSWORD, "since": "0"}, 2),
        ({"username": "alice", "password": "wrong", "since": "0"}, 3),
        ({"username": "blocked", "password": PASSWORD, "since": "0"}, 4),
        ({"username": "blocked", "password": "wrong", "since": "0"}, 3),
        ({"username": "nobody", "password": PASSWORD, "since": "0"}, 200),
        ({"username": "newbie", "password": PASSWORD, "since": "0"}, 220),
    ],
)
async def test_mc5_status_codes(
    client: httpx.AsyncClient, query: dict[str, str], status: int
) -> None:
    response = await client.get(MC5 + "?" + urlencode(query))
    assert response.status_code == 200
    assert response.content == b'{"status":%d}' % status


async def test_mc5_non_form_post_is_a_missing_parameter(client: httpx.AsyncClient) -> None:
    response = await client.post(MC5, json={"username": "alice"})
    assert response.content == b'{"status":1}'


EAPI_PAGE = (
    "0|records to follow|4\n"
    "\n"
    "2|4412312345|Hi there|2011-01-20 16:06:40|447700900001|1|7bit\n"
    "3|4412312346|234f345a324b6b523a|2011-01-20 16:07:35|447700900001|0|8bit\n"
    "4|4412312399|This is a Unicode message ☺|2011-01-20 16:08:00|447700900001|0|16bit\n"
    "5|4412312345|two\\nlines \\x7c pipe|2011-07-07 01:53:20|447700900001|0|7bit\n"
)


@pytest.mark.parametrize("path", [EAPI, "/reception/get_inbox/1/1.1"])
async def test_eapi_page_exact_bytes(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(
        path, params={"username": "alice", "password": PASSWORD, "last_retrieved_id": 0}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.content == EAPI_PAGE.encode()


@pytest.mark.parametrize("path", [EAPI_10, "/reception/get_inbox/1/1.0"])
async def test_eapi_version_10_has_six_fields(client: httpx.AsyncClient, path: str) -> None:
    response = await client.post(
        path, data={"username": "alice", "password": PASSWORD, "last_retrieved_id": "3"}
    )
    assert (
        response.content
        == (
            "0|records to follow|2\n"
            "\n"
            "4|4412312399|This is a Unicode message ☺|2011-01-20 16:08:00|447700900001|0\n"
            "5|4412312345|two\\nlines \\x7c pipe|2011-07-07 01:53:20|447700900001|0\n"
        ).encode()
    )


async def test_eapi_empty_inbox(client: httpx.AsyncClient) -> None:
    response = await client.get(
        EAPI, params={"username": "alice", "password": PASSWORD, "last_retrieved_id": 5}
    )
    assert response.content == b"0|records to follow|0\n\n"


@pytest.mark.parametrize(
    ("query", "body"),
    [
        (
            {"password": PASSWORD, "last_retrieved_id": "0"},
            "24|missing required parameter username|",
        ),
        (
            {"username": "alice", "last_retrieved_id": "0"},
            "24|missing required parameter password|",
        ),
        (
            {"username": "alice", "password": PASSWORD},
            "24|missing required parameter last_retrieved_id|",
        ),
        (
            {"username": "alice", "password": PASSWORD, "last_retrieved_id": "-1"},
            "24|last_retrieved_id must be a non-negative integer|",
        ),
        (
            {"username": "alice", "password": PASSWORD, "last_retrieved_id": "1 OR 1=1"},
            "24|last_retrieved_id must be a non-negative integer|",
        ),
        (
            {"username": "alice", "password": "wrong", "last_retrieved_id": "0"},
            "23|invalid credentials|",
        ),
        (
            {"username": "nobody", "password": PASSWORD, "last_retrieved_id": "0"},
            "23|invalid credentials|",
        ),
        (
            {"username": "blocked", "password": PASSWORD, "last_retrieved_id": "0"},
            "23|account blocked|",
        ),
        (
            {"username": "newbie", "password": PASSWORD, "last_retrieved_id": "0"},
            "23|account not activated|",
        ),
    ],
)
async def test_eapi_error_lines(
    client: httpx.AsyncClient, query: dict[str, str], body: str
) -> None:
    response = await client.get(EAPI + "?" + urlencode(query))
    assert response.status_code == 200
    assert response.text == body


async def test_unavailable_store_gets_each_dialects_code() -> None:
    with LiveServer(unreachable_store()) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            mc5 = await http.get(MC5, params={"username": "a", "password": "b", "since": 0})
            assert mc5.content == b'{"status":9999}'
            eapi = await http.get(
                EAPI, params={"username": "a", "password": "b", "last_retrieved_id": 0}
            )
            assert eapi.content == b"40|temporarily unavailable|"
            login = await http.post(
                "/json/user/login", json={"apiKey": "ak_x", "msisdn": 1, "password": "p"}
            )
            assert login.json() == {"errorCode": 99}


async def test_unexpected_failures_are_internal_errors(
    client: httpx.AsyncClient, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: Services = live_server.server.config.app.state.services

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(served.inbox, "messages_since", broken)
    monkeypatch.setattr(served.inbox, "messages_after_id", broken)
    mc5 = await client.get(MC5, params={"username": "alice", "password": PASSWORD, "since": 0})
    assert mc5.content == b'{"status":9999}'
    eapi = await client.get(
        EAPI, params={"username": "alice", "password": PASSWORD, "last_retrieved_id": 0}
    )
    assert eapi.content == b"22|internal fatal error|"


def test_store_unavailable_maps_to_each_dialect() -> None:
    from smsinbox.dialects import eapi, mc5

    assert mc5.status_of(StoreUnavailable()) == 9999
    assert eapi.status_line(StoreUnavailable()) == "40|temporarily unavailable|"
