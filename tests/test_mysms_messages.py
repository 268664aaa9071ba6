"""The mysms message, contact and device resources, over JSON and XML."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from smsinbox.core.ingest import RawInbound
from smsinbox.dialects import mysms
from smsinbox.services import Services
from tests.conftest import LiveServer
from tests.mysms_client import Mysms

ALICE, BOB = 447700900001, 447700900002
FRIEND = "4915112345"


@pytest.fixture
async def api_key(services: Services) -> str:
    await services.accounts.add("alice", "pw", msisdns=(str(ALICE),))
    await services.accounts.add("bob", "pw", msisdns=(str(BOB),))
    await services.accounts.add("nonumber", "pw")
    _, key = await services.api_keys.create("app")
    return key


@pytest.fixture
async def http(api_key: str, live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as client:
        yield client


@pytest.fixture
async def alice(http: httpx.AsyncClient, api_key: str) -> Mysms:
    client = Mysms(http, api_key)
    await client.login(ALICE, "pw")
    return client


@pytest.fixture
async def bob(http: httpx.AsyncClient, api_key: str) -> Mysms:
    client = Mysms(http, api_key)
    await client.login(BOB, "pw")
    return client


async def receive(services: Services, text: str, sender: str = FRIEND) -> int:
    raw = RawInbound(sender, str(ALICE), text=text.encode())
    return (await services.ingestor.accept(raw, upstream_id=None)).id


async def test_send_to_a_local_number_delivers_at_once(alice: Mysms, bob: Mysms) -> None:
    sent = await alice.call("/user/message/send", recipient=BOB, message="hi bob ☺")
    assert sent["errorCode"] == 0
    [outgoing] = (await alice.call("/user/message/get/by/conversation", address=str(BOB)))[
        "messages"
    ]
    assert outgoing["messageId"] == sent["messageId"]
    assert (outgoing["incoming"], outgoing["status"], outgoing["origin"]) == (False, 2, 2)
    [incoming] = (await bob.call("/user/message/get/by/conversation", address=str(ALICE)))[
        "messages"
    ]
    assert (incoming["message"], incoming["incoming"], incoming["read"]) == (
        "hi bob ☺",
        True,
        False,
    )
    conversations = (await bob.call("/user/message/conversations/get"))["conversations"]
    assert conversations[0]["address"] == str(ALICE)
    assert conversations[0]["messagesUnread"] == 1


async def test_send_elsewhere_is_queued_pending(alice: Mysms) -> None:
    sent = await alice.call("/user/message/send", recipient=int(FRIEND), message="hello")
    [message] = (await alice.call("/user/message/get/by/conversation", address=FRIEND))["messages"]
    assert (message["messageId"], message["status"]) == (sent["messageId"], 1)
    [conversation] = (await alice.call("/user/message/conversations/get"))["conversations"]
    assert conversation["messagesUnsent"] == 1


async def test_scheduled_send_is_dispatched_when_due_even_after_a_restart(
    alice: Mysms, services: Services, settings: object
) -> None:
    later = services.mailbox.clock() + 3_600_000
    sent = await alice.call("/user/message/send", recipient=BOB, message="later", dateSendOn=later)
    [message] = (await alice.call("/user/message/get/by/conversation", address=str(BOB)))[
        "messages"
    ]
    assert message["status"] == 1  # pending until due
    assert await services.dispatcher.dispatch_due() == 0
    # A new process (fresh services on the same database) sends it once it is due.
    restarted = Services.build(services.settings)
    try:
        restarted.dispatcher.clock = lambda: later + 1
        assert await restarted.dispatcher.dispatch_due() == 1
        assert await restarted.dispatcher.dispatch_due() == 0
    finally:
        await restarted.close()
    [message] = (await alice.call("/user/message/get/by/conversation", address=str(BOB)))[
        "messages"
    ]
    assert (message["messageId"], message["status"]) == (sent["messageId"], 2)
    bobs = await services.store.list_recent_messages("bob", 10)
    assert [m.text for m in bobs] == ["later"]


async def test_send_errors(alice: Mysms, http: httpx.AsyncClient, api_key: str) -> None:
    assert await alice.call("/user/message/send", message="x") == {"errorCode": 2}
    assert await alice.call("/user/message/send", recipient=BOB) == {"errorCode": 2}
    assert await alice.call("/user/message/send", recipient=BOB, message="x", deviceId=999) == {
        "errorCode": 105
    }
    lonely = Mysms(http, api_key)
    # An account without a number cannot even log in by number; sessions come from elsewhere.
    assert (await lonely.login(0, "pw"))["errorCode"] == 97


async def test_a_session_whose_account_lost_its_number_cannot_send(
    alice: Mysms, services: Services
) -> None:
    await services.accounts.remove_number(str(ALICE))
    assert await alice.call("/user/message/send", recipient=BOB, message="x") == {"errorCode": 113}


async def test_sender_without_a_number_is_113(services: Services, api_key: str) -> None:
    from smsinbox.core.sessions import Principal
    from smsinbox.errors import SenderWithoutNumber

    nonumber = await services.store.get_account("nonumber")
    assert nonumber is not None
    who = Principal(nonumber.id, "nonumber", (), 1)
    with pytest.raises(SenderWithoutNumber):
        await services.mailbox.send(who, BOB, "x", send_on=None, device_id=None)
    assert mysms.error_code(SenderWithoutNumber()) == 113


async def test_conversations_read_and_delete_keep_locked_messages(
    alice: Mysms, services: Services
) -> None:
    first = await receive(services, "one")
    second = await receive(services, "two")
    await receive(services, "other", sender="4477")
    listed = (await alice.call("/user/message/conversations/get"))["conversations"]
    assert [c["address"] for c in listed] == ["4477", FRIEND]  # most recent first
    friend = listed[1]
    assert (friend["address"], friend["messagesUnread"], friend["messages"]) == (FRIEND, 2, 2)
    assert friend["maxMessageId"] == second and friend["snippet"] == "two"
    assert await alice.call("/user/message/conversations/read", address=FRIEND) == {"errorCode": 0}
    messages = (await alice.call("/user/message/get/by/conversation", address=FRIEND))["messages"]
    assert [m["read"] for m in messages] == [True, True]
    assert await alice.call("/user/message/lock/list", messageIds=[first]) == {
        "errorCode": 0,
        "messagesChanged": 1,
    }
    assert await alice.call("/user/message/conversations/delete", address=FRIEND) == {
        "errorCode": 0,
        "messagesDeleted": 1,
        "lockedMessageIds": [first],
    }
    assert await alice.call("/user/message/conversations/delete/list", addresses=["4477"]) == {
        "errorCode": 0,
        "messagesDeleted": 1,
        "lockedMessageIds": [],
    }
    [left] = (await alice.call("/user/message/conversations/get"))["conversations"]
    assert (left["address"], left["messages"], left["maxMessageId"]) == (FRIEND, 1, first)
    assert await alice.call("/user/message/conversations/read") == {"errorCode": 2}


async def test_message_delete_lock_unlock_update(alice: Mysms, services: Services) -> None:
    ids = [await receive(services, f"m{i}") for i in range(4)]
    await alice.call("/user/message/lock/list", messageIds=ids[:2])
    assert await alice.call("/user/message/delete", messageId=ids[0]) == {
        "errorCode": 0,
        "messagesDeleted": 0,
        "lockedMessageIds": [ids[0]],
    }
    assert await alice.call("/user/message/unlock/list", messageIds=[ids[1]]) == {
        "errorCode": 0,
        "messagesChanged": 1,
    }
    assert await alice.call("/user/message/delete/list", messageIds=ids[1:3]) == {
        "errorCode": 0,
        "messagesDeleted": 2,
        "lockedMessageIds": [],
    }
    updated = await alice.call("/user/message/update", messageId=ids[3], read=True, locked=True)
    assert updated["errorCode"] == 0
    assert (updated["message"]["read"], updated["message"]["locked"]) == (True, True)
    assert await alice.call("/user/message/update", messageId=ids[1], read=True) == {"errorCode": 2}
    assert await alice.call("/user/message/update") == {"errorCode": 2}
    assert await alice.call("/user/message/delete") == {"errorCode": 2}
    assert await alice.call("/user/message/lock/list") == {"errorCode": 2}
    remaining = (await alice.call("/user/message/get/by/conversation", address=FRIEND))["messages"]
    assert [m["messageId"] for m in remaining] == [ids[3], ids[0]]


async def test_get_by_conversation_pages_newest_first(alice: Mysms, services: Services) -> None:
    ids = [await receive(services, f"m{i}") for i in range(5)]
    page = await alice.call("/user/message/get/by/conversation", address=FRIEND, offset=1, limit=2)
    assert [m["messageId"] for m in page["messages"]] == [ids[3], ids[2]]
    assert await alice.call("/user/message/get/by/conversation") == {"errorCode": 2}


async def test_insert_is_idempotent_per_device_message_id(alice: Mysms) -> None:
    device = (await alice.call("/user/device/register", name="phone"))["deviceId"]
    fields = {"address": FRIEND, "message": "seen on my SIM", "deviceId": device,
              "deviceMessageId": "sim-1", "dateSent": 1700000000000}  # fmt: skip
    first = await alice.call("/user/message/insert", **fields)
    again = await alice.call("/user/message/insert", **fields)
    assert first["errorCode"] == 0 and again == first
    [message] = (await alice.call("/user/message/get/by/conversation", address=FRIEND))["messages"]
    assert (message["origin"], message["incoming"], message["dateSent"]) == (0, True, 1700000000000)
    assert await alice.call("/user/message/insert", address=FRIEND) == {"errorCode": 2}
    assert await alice.call("/user/message/insert", address=FRIEND, message="x", deviceId=9) == {
        "errorCode": 105
    }


async def test_search_matches_text_and_address_digits(alice: Mysms, services: Services) -> None:
    meeting = await receive(services, "Meeting at noon?")
    await receive(services, "Lunch tomorrow", sender="447911123456")
    assert [
        m["messageId"] for m in (await alice.call("/user/message/search", query="MEET"))["messages"]
    ] == [meeting]
    by_digits = (await alice.call("/user/message/search", query="7911"))["messages"]
    assert [m["address"] for m in by_digits] == ["447911123456"]
    assert (await alice.call("/user/message/search", query="noon", locked=True))["messages"] == []
    assert (await alice.call("/user/message/search", query="noon", address="447911123456"))[
        "messages"
    ] == []
    assert await alice.call("/user/message/search", query="no") == {"errorCode": 2}
    assert await alice.call("/user/message/search") == {"errorCode": 2}
    # Characters that mean something to SQL LIKE or to FTS5 are searched for literally.
    odd = await receive(services, 'a 100%_"quoted" \\ thing')
    for query in ['100%_"', '"quoted"', '" \\ t']:
        found = (await alice.call("/user/message/search", query=query))["messages"]
        assert [m["messageId"] for m in found] == [odd], query


async def test_contacts_name_conversations(alice: Mysms, services: Services) -> None:
    await receive(services, "hi")
    created = await alice.call("/user/contact/create", name="Friend", msisdns=[FRIEND, "+4477"])
    contact = created["contact"]
    assert contact["msisdns"] == ["4477", FRIEND]  # sorted
    [conversation] = (await alice.call("/user/message/conversations/get"))["conversations"]
    assert conversation["contactName"] == "Friend"
    renamed = await alice.call("/user/contact/update", contactId=contact["contactId"], name="Pal")
    assert renamed["contact"]["name"] == "Pal"
    assert (await alice.call("/user/contact/contacts/get"))["contacts"] == [renamed["contact"]]
    assert await alice.call("/user/contact/delete", contactId=contact["contactId"]) == {
        "errorCode": 0
    }
    assert await alice.call("/user/contact/delete", contactId=contact["contactId"]) == {
        "errorCode": 2
    }
    assert await alice.call("/user/contact/create", msisdns=[FRIEND]) == {"errorCode": 2}


async def test_overlong_device_fields_are_refused_on_every_engine(alice: Mysms) -> None:
    assert await alice.call("/user/device/register", name="x" * 129) == {"errorCode": 2}
    device = (await alice.call("/user/device/register", name="x" * 128))["deviceId"]
    too_long = {"address": FRIEND, "message": "m", "deviceId": device,
                "deviceMessageId": "d" * 129}  # fmt: skip
    assert await alice.call("/user/message/insert", **too_long) == {"errorCode": 2}


async def test_search_ignores_case_in_sender_ids(alice: Mysms, services: Services) -> None:
    mine = await receive(services, "statement ready", sender="MyBank")
    found = (await alice.call("/user/message/search", query="mybank"))["messages"]
    assert [m["messageId"] for m in found] == [mine]


async def test_devices(alice: Mysms) -> None:
    first = await alice.call("/user/device/register", name="phone")
    second = await alice.call("/user/device/register", name="tablet")
    devices = (await alice.call("/user/device/devices/get"))["devices"]
    assert [(d["deviceId"], d["name"]) for d in devices] == [
        (first["deviceId"], "phone"),
        (second["deviceId"], "tablet"),
    ]
    assert await alice.call("/user/device/register") == {"errorCode": 2}


# --- XML ---------------------------------------------------------------------------------

MINIMAL: dict[str, dict[str, object]] = {
    "/user/message/conversations/delete": {"address": FRIEND},
    "/user/message/conversations/delete/list": {"addresses": [FRIEND]},
    "/user/message/conversations/read": {"address": FRIEND},
    "/user/message/delete": {"messageId": 1},
    "/user/message/delete/list": {"messageIds": [1, 2]},
    "/user/message/get/by/conversation": {"address": FRIEND},
    "/user/message/insert": {"address": FRIEND, "message": "sim"},
    "/user/message/lock/list": {"messageIds": [1]},
    "/user/message/unlock/list": {"messageIds": [1]},
    "/user/message/search": {"query": "hello"},
    "/user/message/send": {"recipient": BOB, "message": "hi"},
    "/user/message/update": {"messageId": 1, "read": True},
    "/user/message/sync": {"deviceId": 1, "syncLimit": 10},
    "/user/contact/create": {"name": "X", "msisdns": [FRIEND]},
    "/user/contact/update": {"contactId": 1, "name": "Y"},
    "/user/contact/delete": {"contactId": 1},
    "/user/device/register": {"name": "phone"},
}


@pytest.mark.parametrize("spec", mysms.RESOURCES, ids=lambda spec: spec.path)
async def test_every_resource_speaks_xml(
    spec: mysms.Resource, alice: Mysms, services: Services
) -> None:
    await receive(services, "hello")
    await services.devices.register(await alice_principal(services), "phone")
    await alice.call("/user/contact/create", name="X", msisdns=[FRIEND])
    fields = MINIMAL.get(spec.path, {})
    if spec.path == "/user/login":
        fields = {"msisdn": ALICE, "password": "pw"}
    answer = await alice.call_xml(spec.path, spec.request.name, **fields)
    assert answer.tag == spec.response
    assert answer.findtext("errorCode") == "0", spec.path


async def alice_principal(services: Services) -> object:
    from smsinbox.core.sessions import Principal

    account = await services.store.get_account("alice")
    assert account is not None
    return Principal(account.id, "alice", (str(ALICE),), 1)


async def test_xml_lists_and_nested_objects_round_trip(alice: Mysms, services: Services) -> None:
    ids = [await receive(services, f"m{i}") for i in range(3)]
    answer = await alice.call_xml(
        "/user/message/lock/list", "userMessageLockListRequest", messageIds=ids
    )
    assert answer.findtext("messagesChanged") == "3"
    answer = await alice.call_xml(
        "/user/message/get/by/conversation", "userMessageGetMessagesRequest", address=FRIEND
    )
    messages = answer.findall("messages")
    assert [m.findtext("messageId") for m in messages] == [str(i) for i in reversed(ids)]
    assert messages[0].findtext("locked") == "true"


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;'
        b'&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b"<userMessageSearchRequest><query>&c;</query></userMessageSearchRequest>",
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<userMessageSearchRequest><query>&x;</query></userMessageSearchRequest>",
        b"<userMessageSearchRequest><query>unclosed",
    ],
    ids=["entity-expansion", "external-entity", "malformed"],
)
async def test_hostile_xml_is_a_validation_error(http: httpx.AsyncClient, body: bytes) -> None:
    response = await http.post(
        "/rest/user/message/search", content=body, headers={"Content-Type": "application/xml"}
    )
    assert response.status_code == 200
    assert b"<errorCode>2</errorCode>" in response.content
    assert b"root:" not in response.content


async def test_rest_speaks_json_too_and_follows_accept(
    http: httpx.AsyncClient, api_key: str
) -> None:
    body = {"apiKey": api_key, "msisdn": ALICE, "password": "pw"}
    as_json = await http.post("/rest/user/login", json=body)
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.json()["errorCode"] == 0
    as_xml = await http.post("/rest/user/login", json=body, headers={"Accept": "application/xml"})
    assert as_xml.content.startswith(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>')
    assert b"<userLoginResponse><errorCode>0</errorCode><authToken>at_" in as_xml.content


async def test_malformed_json_is_2(http: httpx.AsyncClient) -> None:
    for body in [b"{not json", b"[1,2]", b'{"apiKey": {"nested": 1}}']:
        response = await http.post("/json/user/login", content=body)
        assert response.json() == {"errorCode": 2}
