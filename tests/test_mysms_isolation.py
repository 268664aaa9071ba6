"""Account B, whatever ids and addresses it sends, reads, changes and deletes nothing of A."""

from __future__ import annotations

import httpx
import pytest

from smsinbox.core.ingest import RawInbound
from smsinbox.services import Services
from tests.conftest import LiveServer
from tests.mysms_client import Mysms

ALICE, BOB = 447700900001, 447700900002
FRIEND = "4915112345"


async def snapshot(services: Services, username: str) -> object:
    """Everything of the account a user could notice."""
    account = await services.store.get_account(username)
    assert account is not None
    messages = await services.store.list_recent_messages(username, 1000)
    return (
        [(m.id, m.text, m.read, m.locked, m.status, m.modseq) for m in messages],
        await services.store.list_conversations(account.id),
        await services.store.list_contacts(account.id),
        await services.store.list_devices(account.id),
    )


@pytest.fixture
async def setting(
    services: Services, live_server: LiveServer
) -> tuple[Mysms, Mysms, dict[str, int]]:
    await services.accounts.add("alice", "pw", msisdns=(str(ALICE),))
    await services.accounts.add("bob", "pw", msisdns=(str(BOB),))
    _, key = await services.api_keys.create("app")
    http = httpx.AsyncClient(base_url=live_server.url, timeout=10)
    alice, bob = Mysms(http, key), Mysms(http, key)
    await alice.login(ALICE, "pw")
    await bob.login(BOB, "pw")
    ids = [
        (
            await services.ingestor.accept(
                RawInbound(FRIEND, str(ALICE), text=f"secret {i}".encode()), upstream_id=None
            )
        ).id
        for i in range(3)
    ]
    await alice.call("/user/message/lock/list", messageIds=[ids[0]])
    contact = (await alice.call("/user/contact/create", name="Friend", msisdns=[FRIEND]))["contact"]
    device = (await alice.call("/user/device/register", name="alice-phone"))["deviceId"]
    return (
        alice,
        bob,
        {"message": ids[1], "locked": ids[0], "contact": contact["contactId"], "device": device},
    )


async def test_account_b_cannot_touch_account_a(
    setting: tuple[Mysms, Mysms, dict[str, int]], services: Services
) -> None:
    alice, bob, theirs = setting
    before = await snapshot(services, "alice")
    ids = [theirs["message"], theirs["locked"]]
    answers = {
        "conversations/get": await bob.call("/user/message/conversations/get"),
        "conversations/read": await bob.call("/user/message/conversations/read", address=FRIEND),
        "conversations/delete": await bob.call(
            "/user/message/conversations/delete", address=FRIEND
        ),
        "conversations/delete/list": await bob.call(
            "/user/message/conversations/delete/list", addresses=[FRIEND, str(ALICE)]
        ),
        "delete": await bob.call("/user/message/delete", messageId=theirs["message"]),
        "delete/list": await bob.call("/user/message/delete/list", messageIds=ids),
        "get/by/conversation": await bob.call("/user/message/get/by/conversation", address=FRIEND),
        "lock/list": await bob.call("/user/message/lock/list", messageIds=ids),
        "unlock/list": await bob.call("/user/message/unlock/list", messageIds=ids),
        "update": await bob.call("/user/message/update", messageId=theirs["message"], read=True),
        "search": await bob.call("/user/message/search", query="secret"),
        "insert": await bob.call(
            "/user/message/insert", address=FRIEND, message="x", deviceId=theirs["device"]
        ),
        "send": await bob.call(
            "/user/message/send", recipient=int(FRIEND), message="x", deviceId=theirs["device"]
        ),
        "sync": await bob.call("/user/message/sync", deviceId=theirs["device"], syncInitial=True),
        "contacts/get": await bob.call("/user/contact/contacts/get"),
        "contact/update": await bob.call(
            "/user/contact/update", contactId=theirs["contact"], name="Mallory"
        ),
        "contact/delete": await bob.call("/user/contact/delete", contactId=theirs["contact"]),
        "devices/get": await bob.call("/user/device/devices/get"),
    }
    assert answers == {
        "conversations/get": {"errorCode": 0, "conversations": []},
        "conversations/read": {"errorCode": 0},
        "conversations/delete": {"errorCode": 0, "messagesDeleted": 0, "lockedMessageIds": []},
        "conversations/delete/list": {"errorCode": 0, "messagesDeleted": 0, "lockedMessageIds": []},
        "delete": {"errorCode": 0, "messagesDeleted": 0, "lockedMessageIds": []},
        "delete/list": {"errorCode": 0, "messagesDeleted": 0, "lockedMessageIds": []},
        "get/by/conversation": {"errorCode": 0, "messages": []},
        "lock/list": {"errorCode": 0, "messagesChanged": 0},
        "unlock/list": {"errorCode": 0, "messagesChanged": 0},
        "update": {"errorCode": 2},
        "search": {"errorCode": 0, "messages": []},
        "insert": {"errorCode": 105},
        "send": {"errorCode": 105},
        "sync": {"errorCode": 105},
        "contacts/get": {"errorCode": 0, "contacts": []},
        "contact/update": {"errorCode": 2},
        "contact/delete": {"errorCode": 2},
        "devices/get": {"errorCode": 0, "devices": []},
    }
    assert await snapshot(services, "alice") == before
    # And alice still sees all of it.
    assert len((await alice.call("/user/message/search", query="secret"))["messages"]) == 3
    await bob.http.aclose()
