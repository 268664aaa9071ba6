"""The operator's console over HTTP on a real socket, on both engines: signing in with the
admin token, accounts and numbers, the unrouted box, upstream tokens, push endpoints, dead
letters and replay, and the overview's figures."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from smsinbox.config import Settings
from smsinbox.core.ingest import RawInbound
from smsinbox.services import Services
from tests.conftest import LiveServer, free_port
from tests.web_client import WebClient, csrf_of

ADMIN_TOKEN = "console-admin-token"
ALICE = "447700900001"
NOBODYS = "447700900099"
FRIEND = "4915112345"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        push_allow_private=True,
        push_retry_schedule="0",  # one attempt, then a dead letter
        login_failures_per_account=1000,
        login_failures_per_address=1000,
        login_failure_delay=0.0,
    )


async def operator_sign_in(client: WebClient, token: str = ADMIN_TOKEN) -> int:
    form = await client.http.get("/operator/signin")
    answer = await client.http.post(
        "/operator/signin", data={"csrf": csrf_of(form.text), "token": token}
    )
    if answer.status_code == 303:
        client.csrf = csrf_of((await client.http.get("/operator/accounts")).text)
    return answer.status_code


@pytest.fixture
async def operator(services: Services, live_server: LiveServer) -> AsyncIterator[WebClient]:
    await services.accounts.add("alice", "alice-password", msisdns=(ALICE,))
    async with WebClient(live_server.url) as client:
        assert await operator_sign_in(client) == 303
        yield client


async def test_the_console_needs_the_admin_token_and_is_apart_from_the_inbox(
    services: Services, live_server: LiveServer
) -> None:
    await services.accounts.add("alice", "alice-password", msisdns=(ALICE,))
    async with WebClient(live_server.url) as client:
        assert (await client.get("/operator")).headers["location"] == "/operator/signin"
        assert await operator_sign_in(client, "wrong") == 401
        assert await operator_sign_in(client, "alice-password") == 401
        assert (await client.get("/operator")).status_code == 303
        # An account's user is not the operator, and the operator reads no inbox.
        assert (await client.sign_in("alice", "alice-password")).status_code == 303
        assert (await client.get("/operator/accounts")).headers["location"] == "/operator/signin"
    async with WebClient(live_server.url) as client:
        assert await operator_sign_in(client) == 303
        assert (await client.get("/operator")).status_code == 200
        assert (await client.get("/inbox")).headers["location"] == "/signin"
        assert (await client.post("/operator/signout")).headers["location"] == "/operator/signin"
        assert (await client.get("/operator")).status_code == 303


async def test_without_an_admin_token_there_is_no_console(database_url: str) -> None:
    settings = Settings(database_url=database_url)
    with LiveServer(settings) as server:
        async with WebClient(server.url) as client:
            for path in ("/operator", "/operator/signin", "/operator/accounts"):
                assert (await client.get(path)).status_code == 404, path
            answer = await client.http.post("/operator/signin", data={"token": ""})
            assert answer.status_code == 404


async def test_accounts_are_created_blocked_and_given_numbers_and_passwords(
    services: Services, operator: WebClient
) -> None:
    created = await operator.post("/operator/accounts", username="bob", password="bob-password",
                                  numbers="447700900002", time_zone="Europe/Vienna")  # fmt: skip
    assert created.headers["location"] == "/operator/accounts/bob?notice=account_added"
    listing = (await operator.get("/operator/accounts")).text
    assert "bob" in listing and "447700900002" in listing
    page = "/operator/accounts/bob"
    assert (await operator.post(page, action="block")).headers["location"].endswith("blocked")
    assert (await services.store.get_account("bob")).status.value == "blocked"  # type: ignore[union-attr]
    await operator.post(page, action="unblock")
    assert (await services.store.get_account("bob")).status.value == "active"  # type: ignore[union-attr]
    await operator.post(page, action="add_number", number="+44 7700 900003")
    await operator.post(page, action="remove_number", number="447700900002")
    [bob] = [a for a in await services.store.list_accounts() if a.username == "bob"]
    assert bob.msisdns == ("447700900003",)
    assert (await operator.post(page, action="password", password="new-bob-pw")).status_code == 303
    async with WebClient(str(operator.http.base_url)) as browser:
        assert (await browser.sign_in("bob", "new-bob-pw")).status_code == 303
    refused = await operator.post("/operator/accounts", username="has space", password="x")
    assert refused.status_code == 400 and 'role="alert"' in refused.text
    taken = await operator.post(page, action="add_number", number=ALICE)
    assert taken.status_code == 400
    # Bob's page does not take alice's number away.
    assert (await operator.post(page, action="remove_number", number=ALICE)).status_code == 400
    [alice] = [a for a in await services.store.list_accounts() if a.username == "alice"]
    assert alice.msisdns == (ALICE,)
    assert (await operator.get("/operator/accounts/nobody")).status_code == 404


async def test_an_accounts_region_is_set_at_creation_and_changed(
    services: Services, operator: WebClient
) -> None:
    created = await operator.post("/operator/accounts", username="bob", password="bob-password",
                                  numbers="07700900002", region="gb")  # fmt: skip
    assert created.status_code == 303
    [bob] = [a for a in await services.store.list_accounts() if a.username == "bob"]
    assert (bob.region, bob.msisdns) == ("GB", ("447700900002",))
    page = "/operator/accounts/bob"
    assert 'value="GB"' in (await operator.get(page)).text
    changed = await operator.post(page, action="region", region="DE")
    assert changed.headers["location"].endswith("notice=region")
    await operator.post(page, action="add_number", number="0151 23456789")
    [bob] = [a for a in await services.store.list_accounts() if a.username == "bob"]
    assert (bob.region, bob.msisdns) == ("DE", ("447700900002", "4915123456789"))
    refused = await operator.post(page, action="region", region="XX")
    assert refused.status_code == 400 and 'role="alert"' in refused.text
    await operator.post(page, action="region", region="")
    assert (await services.store.get_account("bob")).region is None  # type: ignore[union-attr]


async def test_an_unrouted_number_is_assigned_from_the_list(
    services: Services, operator: WebClient
) -> None:
    await services.ingestor.accept(RawInbound(FRIEND, NOBODYS, text=b"anyone there?"),
                                   upstream_id=None)  # fmt: skip
    overview = (await operator.get("/operator")).text
    assert re.search(r'href="/operator/unrouted">1<', overview)
    box = (await operator.get("/operator/unrouted")).text
    assert NOBODYS in box and "anyone there?" in box and "<option>alice</option>" in box
    answer = await operator.post("/operator/unrouted", number=NOBODYS, username="alice")
    assert answer.headers["location"] == "/operator/unrouted?notice=assigned"
    assert "Nothing waiting" in (await operator.get("/operator/unrouted")).text
    [message] = await services.store.list_recent_messages("alice", 10)
    assert (message.text, message.recipient) == ("anyone there?", NOBODYS)


async def test_upstream_tokens_are_shown_once_and_revoked(
    services: Services, operator: WebClient
) -> None:
    page = await operator.post("/operator/upstreams", action="create", name="kannel")
    token = re.search(r'<code class="secret">([^<]+)</code>', page.text)
    assert token is not None
    assert (await services.upstreams.recognise(token.group(1))) is not None
    assert token.group(1) not in (await operator.get("/operator/upstreams")).text
    revoked = await operator.post("/operator/upstreams", action="revoke", name="kannel")
    assert revoked.headers["location"].endswith("notice=upstream_revoked")
    [credential] = await services.upstreams.list()
    assert credential.revoked_at is not None
    async with httpx.AsyncClient(base_url=str(operator.http.base_url)) as upstream:
        answer = await upstream.get("/inbound/sms", params={
            "token": token.group(1), "from": FRIEND, "to": ALICE, "text": "x"})  # fmt: skip
    assert answer.status_code == 401


async def test_a_dead_letter_is_listed_and_replayed(
    services: Services, operator: WebClient
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens there
    page = "/operator/accounts/alice"
    added = await operator.post(page, action="add_endpoint", url=url, format="standard",
                                events="mo")  # fmt: skip
    assert added.headers["location"].endswith("endpoint_added")
    await services.ingestor.accept(RawInbound(FRIEND, ALICE, text=b"push me"), upstream_id=None)
    for _ in range(100):  # the server's own worker tries once and gives up
        if "dead letter" in (await operator.get(page)).text:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("no dead letter listed")
    replayed = await operator.post(page, action="replay", since="0")
    assert replayed.headers["location"].endswith("notice=replayed")
    attempts = await services.push.attempts("alice", failed_only=False)
    assert len(attempts) >= 1
    endpoint_id = (await services.push.endpoints_of("alice"))[0].id
    removed = await operator.post(page, action="remove_endpoint", endpoint=str(endpoint_id))
    assert removed.headers["location"].endswith("endpoint_removed")
    assert await services.push.endpoints_of("alice") == []


async def test_the_overview_shows_the_figures(services: Services, operator: WebClient) -> None:
    _, token = await services.upstreams.create("overview")
    async with httpx.AsyncClient(base_url=str(operator.http.base_url)) as upstream:
        for i in range(3):
            answer = await upstream.get("/inbound/sms", params={
                "token": token, "from": FRIEND, "to": ALICE, "text": f"m{i}"})  # fmt: skip
            assert answer.status_code == 200
    page = (await operator.get("/operator")).text
    assert re.search(r"Received in the last minute \(this process\)</dt><dd>3<", page)
    assert "Retention" in page and "100000" in page
