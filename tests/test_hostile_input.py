"""Hostile input over real HTTP gets each dialect's own validation error and changes nothing.

MC5 answers status 2, EAPI 24, mysms errorCode 2, the upstream endpoint 400 and the admin
API 400 (or 404 for a name that matches nothing); never a 5xx, never the dialect's
"internal error" or "temporarily unavailable" code, which a client would retry forever.
Below, property tests of the encodings and the mysms codec: whatever they are given, they
decode or raise their own error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import defusedxml.ElementTree as safe_xml
import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from smsinbox.config import Settings
from smsinbox.core import gsm
from smsinbox.core.encodings import (
    decode_hex,
    decode_text,
    encoding_for,
    parse_encoding,
)
from smsinbox.core.ingest import RawInbound
from smsinbox.dialects import mysms
from smsinbox.dialects.mysms_codec import MAX_INT, CodecError, ListOf, Schema, decode, encode
from smsinbox.errors import InvalidInput
from smsinbox.models import Encoding
from smsinbox.services import Services
from tests.conftest import LiveServer
from tests.receiver import Receiver

NUMBER = "447700900001"
FRIEND = "4915112345"
PASSWORD = "pw"
ADMIN = {"Authorization": "Bearer admin-secret"}
MC5 = "/services/rest/user/messages"
EAPI = "/eapi/reception/get_inbox/1/1.1"
HUGE = str(2**64)
MAX_BODY = 4096


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        admin_token="admin-secret",
        max_body_bytes=MAX_BODY,
        push_worker=False,
        # Many failed logins below; none of them is what is under test.
        login_failure_delay=0.0,
        login_failures_per_account=1000,
        login_failures_per_address=1000,
    )


@pytest.fixture
async def secrets(services: Services) -> dict[str, str]:
    await services.accounts.add("alice", PASSWORD, msisdns=(NUMBER,))
    _, api_key = await services.api_keys.create("app")
    _, upstream = await services.upstreams.create("kannel")
    for text in (b"hello there", b"second"):
        await services.ingestor.accept(RawInbound(FRIEND, NUMBER, text=text), upstream_id=None)
    return {"api_key": api_key, "upstream": upstream}


@pytest.fixture
async def http(
    live_server: LiveServer, secrets: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as client:
        yield client


@pytest.fixture
async def session(http: httpx.AsyncClient, secrets: dict[str, str]) -> dict[str, Any]:
    login = {"apiKey": secrets["api_key"], "msisdn": int(NUMBER), "password": PASSWORD}
    answer = (await http.post("/json/user/login", json=login)).json()
    return {"apiKey": secrets["api_key"], "authToken": answer["authToken"]}


async def stored(services: Services) -> list[tuple[int, str, bool, bool]]:
    """Alice's incoming messages, to show an attack changed nothing."""
    messages = await services.store.list_recent_messages("alice", 10_000)
    return sorted((m.id, m.text, m.read, m.locked) for m in messages if m.direction.value == "in")


async def mc5_status(http: httpx.AsyncClient, query: str) -> int:
    response = await http.get(f"{MC5}?{query}")
    assert response.status_code == 200
    status: int = response.json()["status"]
    return status


async def eapi_code(http: httpx.AsyncClient, query: str) -> str:
    response = await http.get(f"{EAPI}?{query}")
    assert response.status_code == 200
    return response.text.split("|", 1)[0]


# --- MC5 and EAPI --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "status", "eapi"),
    [
        ("username=%FF%FE&password=pw&since=0", 2, "24"),  # invalid UTF-8
        ("username=alice&password=%C3%28&since=0", 2, "24"),
        ("username=alice%00&password=pw&since=0", 2, "24"),  # NUL
        ("username=alice&password=pw%00&since=0", 2, "24"),
        (f"username=alice&password=pw&since={HUGE}", 2, "24"),
        ("username=alice&password=pw&since=-1", 2, "24"),
        ("username=alice&password=pw&since=1e9", 2, "24"),
        ("username=alice&password=pw&since=%EF%BC%91", 2, "24"),  # fullwidth digit one
        ("username=alice'%20OR%20'1'%3D'1&password=x&since=0", 2, "24"),  # spaces
        ("username=alice'--&password='%20OR%201%3D1%20--&since=0", 200, "23"),
    ],
)
async def test_polling_answers_hostile_parameters_with_its_own_codes(
    http: httpx.AsyncClient, services: Services, query: str, status: int, eapi: str
) -> None:
    before = await stored(services)
    assert await mc5_status(http, query) == status
    assert await eapi_code(http, query.replace("since", "last_retrieved_id")) == eapi
    assert await stored(services) == before


async def test_polling_forms_with_invalid_utf8_and_nul_are_validation_errors(
    http: httpx.AsyncClient,
) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for body in (b"username=\xff&password=pw&since=0", b"username=a%00&password=pw&since=0"):
        answer = await http.post(MC5, content=body, headers=form)
        assert answer.json() == {"status": 2}
        body = body.replace(b"since", b"last_retrieved_id")
        answer = await http.post(EAPI, content=body, headers=form)
        assert answer.text.startswith("24|")


# --- mysms ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/user/message/update", {"messageId": 2**64, "read": True}),
        ("/user/message/update", {"messageId": -(2**64), "read": True}),
        ("/user/message/update", {"messageId": -1, "read": True}),
        ("/user/message/update", {"messageId": "1; DROP TABLE messages", "read": True}),
        ("/user/message/update", {"messageId": 1.5}),
        ("/user/message/update", {"messageId": {"$gt": 0}}),
        ("/user/message/delete/list", {"messageIds": [1, 2**63]}),
        ("/user/message/delete/list", {"messageIds": [[1]]}),
        ("/user/message/delete/list", {"messageIds": "1,2"}),
        ("/user/message/lock/list", {"messageIds": [True]}),
        ("/user/message/get/by/conversation", {"address": FRIEND, "offset": -1}),
        ("/user/message/get/by/conversation", {"address": FRIEND, "offset": 2**70}),
        ("/user/message/get/by/conversation", {"address": "' OR '1'='1"}),
        ("/user/message/get/by/conversation", {"address": ["a", "b"]}),
        ("/user/message/conversations/get", {"limit": "ten"}),
        ("/user/message/search", {"query": "hel\x00lo"}),
        ("/user/message/search", {"query": {"text": "hello"}}),
        ("/user/message/insert", {"address": FRIEND, "message": "x", "dateSent": 2**64}),
        ("/user/message/insert", {"address": FRIEND, "message": "x", "incoming": "maybe"}),
        ("/user/message/sync", {"deviceId": 2**64}),
        ("/user/message/sync", {"deviceId": 1, "syncs": [[{"operation": 1}]]}),
        ("/user/message/sync", {"deviceId": 1, "syncs": ["insert"]}),
        ("/user/contact/create", {"name": "a\x00b", "msisdns": [FRIEND]}),
        ("/user/contact/delete", {"contactId": -1}),
        ("/user/device/register", {"name": ["phone"]}),
    ],
)
async def test_mysms_hostile_values_are_error_2(
    http: httpx.AsyncClient,
    services: Services,
    session: dict[str, Any],
    path: str,
    fields: dict[str, Any],
) -> None:
    before = await stored(services)
    answer = await http.post("/json" + path, json={**session, **fields})
    assert answer.status_code == 200
    assert answer.json() == {"errorCode": 2}
    assert await stored(services) == before


@pytest.mark.parametrize(
    "query",
    [
        "' OR 1=1 --",
        "hello'); DROP TABLE messages; --",
        '"hello" OR NEAR(a b) * ^ -- ;',
        '"unbalanced',
        "hello*",
        "%%%",
        "___",
    ],
)
async def test_sql_and_search_syntax_in_a_query_is_just_text(
    http: httpx.AsyncClient, services: Services, session: dict[str, Any], query: str
) -> None:
    before = await stored(services)
    answer = (await http.post("/json/user/message/search", json={**session, "query": query})).json()
    assert answer["errorCode"] == 0
    assert {m["address"] for m in answer["messages"]} <= {FRIEND}
    assert await stored(services) == before


async def test_invalid_utf8_bodies_are_error_2(
    http: httpx.AsyncClient, session: dict[str, Any]
) -> None:
    json_body = b'{"apiKey": "\xff\xfe", "msisdn": 1, "password": "x"}'
    assert (await http.post("/json/user/login", content=json_body)).json() == {"errorCode": 2}
    xml_body = b"<userLoginRequest><apiKey>\xff\xfe</apiKey></userLoginRequest>"
    answer = await http.post(
        "/rest/user/login", content=xml_body, headers={"Content-Type": "application/xml"}
    )
    assert b"<errorCode>2</errorCode>" in answer.content


async def test_huge_and_negative_ids_in_xml_are_error_2(
    http: httpx.AsyncClient, session: dict[str, Any]
) -> None:
    for value in (HUGE, "-" + HUGE, "-1x", "--5", "²", "0x10", "1e3", "١٢"):
        body = (
            f"<userMessageUpdateRequest><apiKey>{session['apiKey']}</apiKey>"
            f"<authToken>{session['authToken']}</authToken><messageId>{value}</messageId>"
            "<read>true</read></userMessageUpdateRequest>"
        )
        answer = await http.post(
            "/rest/user/message/update",
            content=body.encode(),
            headers={"Content-Type": "application/xml"},
        )
        assert b"<errorCode>2</errorCode>" in answer.content, value


BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">'
        % (level, (b"&lol%d;" % (level - 1) if level > 1 else b"&lol;") * 10)
        for level in range(1, 10)
    )
    + b"]><userLoginRequest><apiKey>&lol9;</apiKey><msisdn>1</msisdn></userLoginRequest>"
)


async def test_billion_laughs_is_refused_without_expanding(http: httpx.AsyncClient) -> None:
    answer = await http.post(
        "/rest/user/login", content=BILLION_LAUGHS, headers={"Content-Type": "application/xml"}
    )
    assert answer.status_code == 200
    assert b"<errorCode>2</errorCode>" in answer.content
    assert b"lollol" not in answer.content


@pytest.fixture
def dtd_server() -> Iterator[Receiver]:
    """A server an external entity would make smsinbox call: it must never be called."""
    receiver = Receiver().start()
    receiver.default = (200, b'<!ENTITY % leak SYSTEM "file:///etc/passwd">', {})
    yield receiver
    receiver.stop()


@pytest.mark.parametrize(
    "doctype",
    [
        '<!DOCTYPE r SYSTEM "{url}/external.dtd">',
        '<!DOCTYPE r [<!ENTITY % remote SYSTEM "{url}/param.dtd"> %remote;]>',
        '<!DOCTYPE r [<!ENTITY x SYSTEM "{url}/entity">]>',
        '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    ],
    ids=["external-dtd", "parameter-entity", "external-entity-http", "external-entity-file"],
)
async def test_external_entities_are_never_fetched(
    http: httpx.AsyncClient, session: dict[str, Any], dtd_server: Receiver, doctype: str
) -> None:
    base = dtd_server.url.rsplit("/", 1)[0]
    body = (
        '<?xml version="1.0"?>'
        + doctype.format(url=base)
        + f"<userMessageSearchRequest><apiKey>{session['apiKey']}</apiKey>"
        f"<authToken>{session['authToken']}</authToken><query>&x;</query>"
        "</userMessageSearchRequest>"
    )
    answer = await http.post(
        "/rest/user/message/search",
        content=body.encode(),
        headers={"Content-Type": "application/xml"},
    )
    assert answer.status_code == 200
    assert b"<errorCode>2</errorCode>" in answer.content
    assert b"root:" not in answer.content
    await asyncio.sleep(0.2)  # an entity fetch would have been made while parsing, before
    assert dtd_server.received == []


# --- size limit ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [MC5, EAPI, "/json/user/message/insert", "/rest/user/message/insert", "/inbound/sms",
     "/admin/accounts/alice/push"],
)  # fmt: skip
async def test_an_oversized_chunked_body_is_refused_with_413(
    http: httpx.AsyncClient, services: Services, path: str
) -> None:
    """No Content-Length to trust: the count of what arrives stops it, on every route (MC5
    and EAPI once answered 'internal error' with a 200, their catch-all took the signal)."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b"username=alice&password=pw&since=0&text="
        for _ in range(MAX_BODY // 512 + 2):
            yield b"x" * 512

    before = await stored(services)
    answer = await http.post(
        path,
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded", **ADMIN},
    )
    assert answer.status_code == 413
    assert await stored(services) == before


def test_a_declared_oversized_body_is_refused_before_it_is_sent(live_server: LiveServer) -> None:
    """The answer comes on the headers alone: the server never waits for the body."""
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as connection:
        connection.sendall(
            b"POST /rest/user/message/search HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/xml\r\nContent-Length: 100000000\r\n\r\n"
        )
        head = connection.recv(4096)
    assert head.startswith(b"HTTP/1.1 413 ")


# --- admin and upstream --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("DELETE", f"/admin/push/{HUGE}", None, 400),
        ("DELETE", "/admin/push/-1", None, 400),
        ("DELETE", "/admin/push/1%20OR%201=1", None, 400),
        ("GET", "/admin/accounts/alice%00/push", None, 400),
        ("GET", "/admin/accounts/alice'%20OR%20'1'='1/push", None, 404),
        ("POST", "/admin/accounts/alice/push", {"url": 5}, 400),
        ("POST", "/admin/accounts/alice/push", {"url": "http://[::1/x"}, 400),
        ("POST", "/admin/accounts/alice/push", {"url": "http://127.0.0.1:99999/x"}, 400),
        ("POST", "/admin/accounts/alice/push", {"url": "http://127.0.0.1/\x00"}, 400),
        ("POST", "/admin/accounts/alice/push", {"url": "http://x/", "events": "mo"}, 400),
        ("POST", "/admin/accounts/alice/push/replay", {"since": 2**70}, 400),
        ("POST", "/admin/accounts/alice/push/replay", {"since": "-1"}, 400),
        ("POST", "/admin/accounts/alice/push/replay", {"since": [1]}, 400),
    ],
)
async def test_admin_answers_hostile_input_with_4xx(
    http: httpx.AsyncClient,
    secrets: dict[str, str],
    method: str,
    path: str,
    body: Any,
    status: int,
) -> None:
    answer = await http.request(method, path, json=body, headers=ADMIN)
    assert answer.status_code == status, answer.text
    assert "error" in answer.json()


async def test_admin_refuses_a_body_that_is_not_utf8_json(
    http: httpx.AsyncClient, secrets: dict[str, str]
) -> None:
    answer = await http.post("/admin/accounts/alice/push", content=b"\xff\xfe{", headers=ADMIN)
    assert answer.status_code == 400


@pytest.mark.parametrize(
    "extra",
    [
        {"ref": HUGE},
        {"ref": "-1"},
        {"time": HUGE},
        {"id": "a\x00b"},
        {"charset": "\x00"},
        {"charset": "rot13"},
        {"charset": "base64"},
        {"charset": "zlib"},
        {"to": "9" * 40},
        {"to": "1' OR '1'='1"},
        {"coding": "9"},
        {"hex": "zz", "encoding": "8bit"},
    ],
)
async def test_upstream_hostile_parameters_are_a_400(
    http: httpx.AsyncClient, services: Services, secrets: dict[str, str], extra: dict[str, str]
) -> None:
    before = await stored(services)
    params = {"token": secrets["upstream"], "from": FRIEND, "to": NUMBER, "text": "x", **extra}
    answer = await http.get("/inbound/sms", params=params)
    assert answer.status_code == 400, answer.text
    assert await stored(services) == before


# --- properties of the encodings -----------------------------------------------------------

GSM_TEXT = st.text(alphabet=sorted(gsm.CHARACTERS))
ASTRAL = st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF)
CHARSETS = st.sampled_from(
    [None, "", "utf-8", "UTF-16BE", "ucs-2", "iso-8859-1", "utf-7", "idna", "punycode",
     "undefined", "rot13", "base64", "zlib", "hex", "klingon", "\x00", "utf-8\x00"]
)  # fmt: skip


@given(GSM_TEXT)
def test_gsm_alphabet_text_is_7bit_and_survives_utf8_transport(text: str) -> None:
    assert encoding_for(text) is Encoding.GSM7
    assert decode_text(text.encode(), Encoding.GSM7, None) == (text, None)


@given(GSM_TEXT, st.characters().filter(lambda c: c not in gsm.CHARACTERS), GSM_TEXT)
def test_one_character_outside_the_gsm_alphabet_makes_it_16bit(
    before: str, outside: str, after: str
) -> None:
    assert encoding_for(before + outside + after) is Encoding.UCS2


# Lone surrogates (category Cs) are not text UCS-2 can carry; their refusal is tested below.
TEXT_CHARACTERS = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")


@given(st.text(alphabet=st.one_of(ASTRAL, TEXT_CHARACTERS)))
@example("😀 𝄞 ☺")
def test_ucs2_with_surrogate_pairs_round_trips(text: str) -> None:
    octets = text.encode("utf-16-be")
    assert decode_text(octets, Encoding.UCS2, "UCS-2") == (text, None)
    assert decode_hex(octets.hex(), Encoding.UCS2) == (text, None)


@given(st.text(min_size=1), st.integers(min_value=0xD800, max_value=0xDBFF))
def test_a_lone_high_surrogate_in_ucs2_is_refused(text: str, surrogate: int) -> None:
    octets = text.encode("utf-16-be") + surrogate.to_bytes(2, "big")
    with pytest.raises(InvalidInput):
        decode_text(octets, Encoding.UCS2, "UTF-16BE")


@given(st.binary(max_size=64), st.sampled_from(list(Encoding)), CHARSETS)
def test_decoding_any_octets_gives_text_or_invalid_input(
    octets: bytes, encoding: Encoding, charset: str | None
) -> None:
    try:
        text, kept = decode_text(octets, encoding, charset)
    except InvalidInput:
        return
    assert "\x00" not in text
    assert kept is None or kept == octets


@given(st.text(max_size=64), st.sampled_from(list(Encoding)))
@example("0", Encoding.BINARY)
@example("d83d", Encoding.UCS2)
@example("٣٣", Encoding.BINARY)
def test_decoding_any_hex_gives_text_or_invalid_input(payload: str, encoding: Encoding) -> None:
    try:
        text, _ = decode_hex(payload, encoding)
    except InvalidInput:
        return
    assert "\x00" not in text


@given(st.one_of(st.none(), st.text(max_size=8)), st.one_of(st.none(), st.text(max_size=4)))
def test_any_encoding_name_is_an_encoding_or_invalid_input(
    name: str | None, coding: str | None
) -> None:
    with contextlib.suppress(InvalidInput):
        assert isinstance(parse_encoding(name, coding), Encoding)


# --- properties of the mysms codec ---------------------------------------------------------

INTS = st.integers(min_value=-MAX_INT, max_value=MAX_INT)
# Any text XML 1.0 can carry; NUL and the other C0 controls are covered separately below.
XML_TEXT = st.text(
    st.characters(
        exclude_categories=("Cs",),
        exclude_characters="\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10\x11\x12"
        "\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\ufffe\uffff",
    )
)


def values_of(kind: Any) -> st.SearchStrategy[Any]:
    if isinstance(kind, ListOf):
        return st.lists(values_of(kind.item), min_size=1, max_size=3)
    if isinstance(kind, Schema):
        return requests_of(kind, credentials=False)
    return {"int": INTS, "str": XML_TEXT, "bool": st.booleans()}[kind]


def requests_of(schema: Schema, *, credentials: bool = True) -> st.SearchStrategy[Any]:
    fields = {
        name: values_of(kind)
        for name, kind in schema.fields.items()
        if credentials or name not in ("apiKey", "authToken")
    }
    return st.fixed_dictionaries({}, optional=fields)


SCHEMAS = [resource.request for resource in mysms.RESOURCES]


@given(st.data(), st.sampled_from(SCHEMAS), st.booleans())
def test_every_request_schema_round_trips_through_json_and_xml(
    data: st.DataObject, schema: Schema, xml: bool
) -> None:
    request = data.draw(requests_of(schema))
    body = encode(request, xml=xml, element=schema.name)
    decoded = decode(body, xml=xml, schema=schema)
    assert decoded == request


@given(st.text())
@example("a\rb\r\nc")
@example("bell\x07 and \x1b escape, \ufffe")
def test_any_message_text_in_an_xml_answer_parses(text: str) -> None:
    body = encode({"errorCode": 0, "message": text}, xml=True, element="r")
    parsed = safe_xml.fromstring(body).findtext("message")
    assert parsed is not None
    assert len(parsed) == len(text)
    assert all(a == b or b == "\ufffd" for a, b in zip(text, parsed, strict=True))


@given(st.binary(max_size=200), st.sampled_from(SCHEMAS), st.booleans())
def test_any_octets_decode_or_raise_the_codec_error(body: bytes, schema: Schema, xml: bool) -> None:
    with contextlib.suppress(CodecError):
        decode(body, xml=xml, schema=schema)


@given(st.text(max_size=200), st.sampled_from(SCHEMAS))
@example("<userLoginRequest><msisdn>\x01</msisdn></userLoginRequest>", SCHEMAS[0])
@example('{"msisdn": "\\u0000"}', SCHEMAS[0])
@example('{"apiKey": "a\\u0000"}', SCHEMAS[0])
@example('{"apiKey": 1e400}', SCHEMAS[0])
@example('{"msisdn": "--5"}', SCHEMAS[0])
@example('{"msisdn": "²"}', SCHEMAS[0])
@example('{"apiKey": [[[[[[[[[[]]]]]]]]]]}', SCHEMAS[0])
def test_any_text_with_control_characters_decodes_or_raises_the_codec_error(
    text: str, schema: Schema
) -> None:
    for xml in (False, True):
        with contextlib.suppress(CodecError):
            decode(text.encode(), xml=xml, schema=schema)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(), lambda inner: (
    st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
), max_leaves=10), st.sampled_from(SCHEMAS))  # fmt: skip
def test_any_json_values_for_the_fields_decode_or_raise_the_codec_error(
    value: Any, schema: Schema
) -> None:
    document = dict.fromkeys(schema.fields, value)
    with contextlib.suppress(CodecError):
        decode(json.dumps(document).encode(), xml=False, schema=schema)
