"""Two devices of one account, changing things in between their syncs, end up with exactly
the server's state."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from smsinbox.core.ingest import RawInbound
from smsinbox.services import Services
from tests.conftest import LiveServer
from tests.mysms_client import DeviceCopy, Mysms, held_by_server

ALICE = 447700900001
FRIEND = "4915112345"


class Device(DeviceCopy):
    """A device that also makes changes of its own, sent with its next sync."""

    def __init__(self, client: Mysms, device_id: int) -> None:
        super().__init__(device_id)
        self.client = client
        self.outbox: list[dict[str, Any]] = []

    def insert(self, device_message_id: str, text: str) -> None:
        self.outbox.append({"operation": 1, "deviceMessageId": device_message_id,
                            "address": FRIEND, "message": text, "incoming": True})  # fmt: skip

    def update(self, message_id: int, **fields: bool) -> None:
        self.outbox.append({"operation": 0, "messageId": message_id, **fields})

    def delete(self, message_id: int) -> None:
        self.outbox.append({"operation": 2, "messageId": message_id})

    async def sync(self, *, initial: bool = False) -> None:
        syncs, self.outbox = self.outbox, []
        await self.catch_up(self.client, syncs=syncs, limit=2, initial=initial)


async def test_two_devices_converge_on_the_server_state(
    services: Services, live_server: LiveServer
) -> None:
    await services.accounts.add("alice", "pw", msisdns=(str(ALICE),))
    _, key = await services.api_keys.create("app")

    async def arrive(text: str) -> int:
        raw = RawInbound(FRIEND, str(ALICE), text=text.encode())
        return (await services.ingestor.accept(raw, upstream_id=None)).id

    m = [await arrive(f"m{i}") for i in range(5)]
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        client = Mysms(http, key)
        await client.login(ALICE, "pw")
        one = Device(client, (await client.call("/user/device/register", name="one"))["deviceId"])
        two = Device(client, (await client.call("/user/device/register", name="two"))["deviceId"])
        await one.sync(initial=True)
        await two.sync(initial=True)
        assert one.messages == two.messages == await held_by_server(services, "alice")

        one.insert("one-1", "typed on one")
        one.update(m[0], read=True)
        one.delete(m[1])
        await one.sync()
        two.update(m[2], locked=True)
        two.delete(m[0])  # one just marked it read: the delete wins
        two.insert("two-1", "typed on two")
        two.insert("two-1", "typed on two")  # a retried insert is not a second message
        await arrive("m5")
        await client.call("/user/message/conversations/read", address=FRIEND)
        await two.sync()
        one.update(m[3], locked=True)
        one.delete(m[2])  # locked by two meanwhile: it stays
        await one.sync()
        await two.sync()
        await one.sync()

    expected = await held_by_server(services, "alice")
    assert m[0] not in expected and m[1] not in expected and m[2] in expected
    assert sorted(text for _, text, _, _ in expected.values()).count("typed on two") == 1
    assert one.messages == expected
    assert two.messages == expected


async def test_a_device_behind_purged_tombstones_must_resync(
    services: Services, live_server: LiveServer
) -> None:
    await services.accounts.add("alice", "pw", msisdns=(str(ALICE),))
    _, key = await services.api_keys.create("app")
    raw = RawInbound(FRIEND, str(ALICE), text=b"soon gone")
    doomed = (await services.ingestor.accept(raw, upstream_id=None)).id
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        client = Mysms(http, key)
        await client.login(ALICE, "pw")
        device = (await client.call("/user/device/register", name="old"))["deviceId"]
        await client.call("/user/message/delete", messageId=doomed)
        account = await services.store.get_account("alice")
        assert account is not None
        purged = await services.store.purge_tombstones(
            account.id, deleted_before=services.ingestor.clock() + 1, batch=10
        )
        assert purged == 1
        stale = await client.call("/user/message/sync", deviceId=device, syncAcks=[0])
        assert (stale["errorCode"], stale["syncResync"], stale["syncs"]) == (0, True, [])
        fresh = await client.call("/user/message/sync", deviceId=device, syncInitial=True)
        assert (fresh["syncResync"], fresh["syncs"]) == (False, [])
        assert await client.call("/user/message/sync") == {"errorCode": 2}
        assert await client.call("/user/message/sync", deviceId=4242) == {"errorCode": 105}
        assert (
            await client.call(
                "/user/message/sync", deviceId=device, syncs=[{"operation": 7, "messageId": 1}]
            )
        ) == {"errorCode": 2}


@pytest.mark.parametrize("limit", [1, 3])
async def test_changes_page_in_modseq_order_without_gaps(
    services: Services, live_server: LiveServer, limit: int
) -> None:
    await services.accounts.add("alice", "pw", msisdns=(str(ALICE),))
    _, key = await services.api_keys.create("app")
    for i in range(7):
        raw = RawInbound(FRIEND, str(ALICE), text=f"m{i}".encode())
        await services.ingestor.accept(raw, upstream_id=None)
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        client = Mysms(http, key)
        await client.login(ALICE, "pw")
        device = (await client.call("/user/device/register", name="d"))["deviceId"]
        seen: list[int] = []
        state, more = 0, True
        while more:
            answer = await client.call(
                "/user/message/sync", deviceId=device, syncAcks=[state], syncLimit=limit
            )
            seen += [change["messageId"] for change in answer["syncs"]]
            assert all(change["operation"] == 1 for change in answer["syncs"])
            state, more = answer["syncState"], answer["syncMore"]
    assert seen == sorted(seen) and len(seen) == 7


async def test_an_initial_sync_leaves_the_device_current_even_after_purges(
    services: Services, live_server: LiveServer
) -> None:
    """The state an initial listing ends with covers deletes purged before it, so the next
    sync neither asks for a resync again nor repeats old deletes."""
    await services.accounts.add("alice", "pw", msisdns=(str(ALICE),))
    _, key = await services.api_keys.create("app")
    ids = []
    for text in ("keep", "drop"):
        raw = RawInbound(FRIEND, str(ALICE), text=text.encode())
        ids.append((await services.ingestor.accept(raw, upstream_id=None)).id)
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        client = Mysms(http, key)
        await client.login(ALICE, "pw")
        await client.call("/user/message/delete", messageId=ids[1])
        account = await services.store.get_account("alice")
        assert account is not None
        await services.store.purge_tombstones(
            account.id, deleted_before=services.ingestor.clock() + 1, batch=10
        )
        device = Device(
            client, (await client.call("/user/device/register", name="new"))["deviceId"]
        )
        await device.sync(initial=True)
        assert list(device.messages) == [ids[0]]
        answer = await client.call(
            "/user/message/sync", deviceId=device.device_id, syncAcks=[device.state]
        )
        assert (answer["syncResync"], answer["syncs"]) == (False, [])


async def test_a_paged_initial_listing_sends_every_message_as_an_insert(
    services: Services, live_server: LiveServer
) -> None:
    await services.accounts.add("alice", "pw", msisdns=(str(ALICE),))
    _, key = await services.api_keys.create("app")
    first = (
        await services.ingestor.accept(RawInbound(FRIEND, str(ALICE), text=b"a"), upstream_id=None)
    ).id
    await services.ingestor.accept(RawInbound(FRIEND, str(ALICE), text=b"b"), upstream_id=None)
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        client = Mysms(http, key)
        await client.login(ALICE, "pw")
        await client.call("/user/message/update", messageId=first, read=True)  # now newest
        device = (await client.call("/user/device/register", name="d"))["deviceId"]
        operations, state, more = [], 0, True
        while more:
            answer = await client.call(
                "/user/message/sync", deviceId=device, syncAcks=[state], syncLimit=1,
                syncInitial=True,
            )  # fmt: skip
            operations += [(c["messageId"], c["operation"]) for c in answer["syncs"]]
            state, more = answer["syncState"], answer["syncMore"]
    assert sorted(operations) == [(first, 1), (first + 1, 1)]


async def test_a_sync_with_an_unknown_operation_applies_none_of_its_changes(
    services: Services, live_server: LiveServer
) -> None:
    await services.accounts.add("alice", "pw", msisdns=(str(ALICE),))
    _, key = await services.api_keys.create("app")
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        client = Mysms(http, key)
        await client.login(ALICE, "pw")
        device = (await client.call("/user/device/register", name="phone"))["deviceId"]
        inserted = {"operation": 1, "deviceMessageId": "d-1", "address": FRIEND,
                    "message": "kept?", "incoming": True}  # fmt: skip
        answer = await client.call(
            "/user/message/sync", deviceId=device, syncs=[inserted, {"operation": 7}]
        )
        assert answer == {"errorCode": 2}
        assert await held_by_server(services, "alice") == {}
        # The same insert on its own is applied.
        answer = await client.call("/user/message/sync", deviceId=device, syncs=[inserted])
        assert answer["errorCode"] == 0 and len(answer["syncAcks"]) == 1
        assert [text for _, text, _, _ in (await held_by_server(services, "alice")).values()] == [
            "kept?"
        ]


@pytest.mark.parametrize(
    "shape",
    [{}, {"syncInitial": True}, {"syncs": [{"operation": 2, "messageId": 1}]}],
    ids=["listing", "initial", "with-changes"],
)
async def test_a_sync_naming_another_accounts_device_is_refused_and_changes_nothing(
    services: Services, live_server: LiveServer, shape: dict[str, Any]
) -> None:
    await services.accounts.add("alice", "pw", msisdns=(str(ALICE),))
    await services.accounts.add("bob", "pw", msisdns=("447700900002",))
    await services.ingestor.accept(RawInbound(FRIEND, "447700900002", text=b"hi"), upstream_id=None)
    _, key = await services.api_keys.create("app")
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        bob = Mysms(http, key)
        await bob.login(447700900002, "pw")
        bobs_phone = (await bob.call("/user/device/register", name="phone"))["deviceId"]
        alice = Mysms(http, key)
        await alice.login(ALICE, "pw")
        answer = await alice.call("/user/message/sync", deviceId=bobs_phone, syncAcks=[1], **shape)
        assert answer == {"errorCode": 105}
        # Bob's phone acknowledged nothing meanwhile: its next sync still lists his message.
        answer = await bob.call("/user/message/sync", deviceId=bobs_phone)
        assert answer["errorCode"] == 0
        assert [change["message"] for change in answer["syncs"]] == ["hi"]
