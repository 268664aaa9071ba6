"""The web inbox over HTTP on a real socket: signing in, conversations, threads, replies,
locks, deletes, search, contacts and the live event stream, on both engines."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from smsinbox.config import Settings
from smsinbox.core.ingest import RawInbound
from smsinbox.services import Services
from tests.conftest import LiveServer
from tests.web_client import WebClient, csrf_of

ALICE = "447700900001"
FRIEND = "4915112345"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        login_failures_per_account=1000,
        login_failures_per_address=1000,
        login_failure_delay=0.0,
        default_time_zone="Europe/Vienna",
    )


@pytest.fixture
async def accounts(services: Services) -> None:
    await services.accounts.add("alice", "alice-password", msisdns=(ALICE,))


@pytest.fixture
async def alice(accounts: None, live_server: LiveServer) -> AsyncIterator[WebClient]:
    async with WebClient(live_server.url) as client:
        assert (await client.sign_in("alice", "alice-password")).status_code == 303
        yield client


async def receive(services: Services, text: str, sender: str = FRIEND) -> int:
    raw = RawInbound(sender, ALICE, text=text.encode())
    return (await services.ingestor.accept(raw, upstream_id=None)).id


async def test_a_browser_without_a_session_is_sent_to_the_sign_in_page(
    accounts: None, live_server: LiveServer
) -> None:
    async with WebClient(live_server.url) as browser:
        assert (await browser.get("/")).headers["location"] == "/inbox"
        for path in ("/inbox", f"/inbox/{FRIEND}", "/search", "/contacts", "/compose"):
            answer = await browser.get(path)
            assert (answer.status_code, answer.headers["location"]) == (303, "/signin"), path
        page = await browser.get("/signin")
        assert page.status_code == 200
        assert 'for="login"' in page.text and 'for="password"' in page.text


async def test_sign_in_by_username_or_number_sets_a_guarded_cookie(
    accounts: None, live_server: LiveServer
) -> None:
    for login in ("alice", ALICE, "+" + ALICE):
        async with WebClient(live_server.url) as browser:
            answer = await browser.sign_in(login, "alice-password")
            assert (answer.status_code, answer.headers["location"]) == (303, "/inbox"), login
            cookie = next(c for c in answer.headers.get_list("set-cookie")
                          if c.startswith("smsinbox_session="))  # fmt: skip
            assert "HttpOnly" in cookie and "SameSite=lax" in cookie
            assert "Secure" not in cookie  # plain HTTP here; over TLS it is Secure
            inbox = await browser.get("/inbox")
            assert inbox.status_code == 200 and "<h1" in inbox.text


async def test_wrong_credentials_and_a_forged_sign_in_form_get_nowhere(
    accounts: None, live_server: LiveServer
) -> None:
    async with WebClient(live_server.url) as browser:
        for login, password in (("alice", "wrong"), ("nobody", "alice-password"), ("", "")):
            answer = await browser.sign_in(login, password)
            assert answer.status_code in (400, 401)
            assert "smsinbox_session" not in answer.headers.get("set-cookie", "")
            assert 'role="alert"' in answer.text
        assert (await browser.get("/inbox")).status_code == 303
        # A form posted from elsewhere has no matching sign-in cookie.
        async with httpx.AsyncClient(base_url=live_server.url) as forger:
            answer = await forger.post(
                "/signin", data={"csrf": "x", "login": "alice", "password": "alice-password"}
            )
            assert answer.status_code == 403
            assert "smsinbox_session" not in answer.headers.get("set-cookie", "")


async def test_failed_sign_ins_lock_the_account_out_as_on_the_apis(
    database_url: str, services: Services
) -> None:
    await services.accounts.add("carol", "carol-password")
    guarded = Settings(database_url=database_url, login_failures_per_account=3,
                       login_failure_delay=0.0)  # fmt: skip
    with LiveServer(guarded) as server:
        async with WebClient(server.url) as browser:
            for _ in range(3):
                assert (await browser.sign_in("carol", "wrong")).status_code == 401
            locked = await browser.sign_in("carol", "carol-password")
            assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
            assert "Too many failed sign-ins" in locked.text


async def test_every_form_needs_the_sessions_csrf_token(
    services: Services, alice: WebClient
) -> None:
    message_id = await receive(services, "keep me")
    for path, fields in ((f"/messages/{message_id}/delete", {}),
                         (f"/inbox/{FRIEND}", {"text": "forged"}), ("/signout", {})):  # fmt: skip
        for csrf in ("", "not-the-token"):
            answer = await alice.http.post(path, data={"csrf": csrf, **fields})
            assert answer.status_code == 403, path
    assert [m.text for m in await services.store.list_recent_messages("alice", 10)] == ["keep me"]
    assert (await alice.get("/inbox")).status_code == 200  # still signed in


async def test_conversations_show_names_snippets_unread_counts_and_pages(
    services: Services, alice: WebClient
) -> None:
    for i in range(55):
        await receive(services, f"hello number {i}", sender=f"43660{i:07d}")
    await receive(services, "from a friend")
    await receive(services, "and again")
    account = await services.store.get_account("alice")
    assert account is not None
    await services.store.create_contact(account.id, "Fritz Friend", [FRIEND], now=0)
    first = await alice.get("/inbox")
    assert "Fritz Friend" in first.text and "and again" in first.text
    assert "<title>(57) Inbox" in first.text
    assert 'aria-label="2 unread"' in first.text
    assert first.text.count('<li class="unread">') == 50
    assert 'href="/inbox?page=2"' in first.text
    second = await alice.get("/inbox", page="2")
    assert second.text.count('<li class="unread">') == 6
    assert "page=3" not in second.text
    assert "hello number 0" in second.text


async def test_a_thread_marks_read_shows_statuses_and_sends_replies(
    services: Services, alice: WebClient
) -> None:
    await receive(services, "are you there?")
    thread = await alice.get(f"/inbox/{FRIEND}")
    assert thread.status_code == 200 and "are you there?" in thread.text
    [conversation] = await services.mailbox.conversations(
        await principal(services), offset=0, limit=10
    )
    assert conversation[0].unread_count == 0
    sent = await alice.post(f"/inbox/{FRIEND}", text="yes, here <b>bold</b>")
    assert sent.status_code == 303 and sent.headers["location"] == f"/inbox/{FRIEND}?notice=sent"
    page = (await alice.get(sent.headers["location"])).text
    assert "Message sent." in page
    assert "yes, here &lt;b&gt;bold&lt;/b&gt;" in page  # escaped, never markup
    # A number outside this server waits for an SMSC: its status says so.
    assert "Waiting to send" in page
    later = await alice.post(f"/inbox/{FRIEND}", text="tomorrow", send_at="2099-01-01T09:30")
    assert later.headers["location"].endswith("notice=scheduled")
    page = (await alice.get(f"/inbox/{FRIEND}")).text
    assert "tomorrow" in page and "Scheduled" in page
    [scheduled] = [m for m in await services.store.list_recent_messages("alice", 10)
                   if m.text == "tomorrow"]  # fmt: skip
    assert scheduled.send_at == 4070939400000  # 09:30 in Vienna (UTC+1) on 2099-01-01


async def test_an_empty_or_bad_reply_is_refused_with_its_reason(
    services: Services, alice: WebClient
) -> None:
    await receive(services, "hi")
    answer = await alice.post(f"/inbox/{FRIEND}", text="")
    assert answer.status_code == 400 and 'role="alert"' in answer.text
    assert "hi" in answer.text  # the conversation, under the reason
    multipart = await alice.http.post(f"/inbox/{FRIEND}", files={"text": ("t.txt", b"x")})
    assert multipart.status_code == 400
    answer = await alice.post(f"/inbox/{FRIEND}", text="x", send_at="not a time")
    assert answer.status_code == 400 and "send time" in answer.text
    answer = await alice.post("/compose", to="not a number", text="x")
    assert answer.status_code == 400 and 'role="alert"' in answer.text
    assert [m.text for m in await services.store.list_recent_messages("alice", 10)] == ["hi"]


async def test_compose_starts_a_conversation(services: Services, alice: WebClient) -> None:
    answer = await alice.post("/compose", to="+43 660 1234567", text="new here")
    assert answer.headers["location"] == "/inbox/436601234567?notice=sent"
    assert "new here" in (await alice.get("/inbox/436601234567")).text


async def test_numbers_are_read_in_the_accounts_region(
    services: Services, alice: WebClient
) -> None:
    await services.accounts.set_region("alice", "AT")
    answer = await alice.post("/compose", to="0660 1234567", text="national")
    assert answer.headers["location"] == "/inbox/436601234567?notice=sent"
    [sent] = await services.store.list_recent_messages("alice", 10)
    assert sent.recipient == "436601234567"
    # The same conversation, however its number is written.
    assert "national" in (await alice.get("/inbox/0660%201234567")).text
    reply = await alice.post("/inbox/06601234567", text="again")
    assert reply.headers["location"] == "/inbox/436601234567?notice=sent"
    await alice.post("/contacts", name="Anna", numbers="+43-660-1234567")
    account = await services.store.get_account("alice")
    assert account is not None
    [anna] = await services.store.list_contacts(account.id)
    assert anna.msisdns == ("436601234567",)


async def test_lock_keeps_a_message_from_delete_until_unlocked(
    services: Services, alice: WebClient
) -> None:
    message_id = await receive(services, "precious")
    back = f"/inbox/{FRIEND}"
    locked = await alice.post(f"/messages/{message_id}/lock", locked="1", back=back)
    assert locked.headers["location"] == back + "?notice=locked"
    page = (await alice.get(back)).text
    assert "Unlock" in page and f'action="/messages/{message_id}/delete"' not in page
    kept = await alice.post(f"/messages/{message_id}/delete", back=back)
    assert kept.headers["location"] == back + "?notice=kept"
    assert len(await services.store.list_recent_messages("alice", 10)) == 1
    await alice.post(f"/messages/{message_id}/lock", locked="0", back=back)
    deleted = await alice.post(f"/messages/{message_id}/delete", back=back)
    assert deleted.headers["location"] == back + "?notice=deleted"
    assert "precious" not in (await alice.get(back)).text
    assert (await alice.post(f"/messages/{message_id}/delete", back=back)).status_code == 404
    # A return address off this server is not followed.
    other = await receive(services, "other")
    answer = await alice.post(f"/messages/{other}/lock", locked="1", back="//evil.example/")
    assert answer.headers["location"] == "/inbox?notice=locked"


async def test_search_highlights_the_matches(services: Services, alice: WebClient) -> None:
    await receive(services, "The parcel <arrives> Tuesday")
    await receive(services, "nothing to see")
    page = (await alice.get("/search", q="parcel")).text
    assert "The <mark>parcel</mark> &lt;arrives&gt; Tuesday" in page
    assert "nothing to see" not in page
    assert "1 message found" in page
    short = await alice.get("/search", q="ab")
    assert 'role="alert"' in short.text


async def test_contacts_are_listed_added_and_edited(services: Services, alice: WebClient) -> None:
    added = await alice.post("/contacts", name="Fritz", numbers=f"{FRIEND}, 436601234567")
    assert added.headers["location"] == "/contacts?notice=contact_added"
    listing = (await alice.get("/contacts")).text
    assert "Fritz" in listing and FRIEND in listing
    contact_id = re.search(r'href="/contacts/(\d+)"', listing)
    assert contact_id is not None
    edited = await alice.post(f"/contacts/{contact_id.group(1)}", name="Fritz F.", numbers=FRIEND)
    assert edited.headers["location"] == "/contacts?notice=contact_saved"
    [contact] = await services.contacts.list(await principal(services))
    assert (contact.name, contact.msisdns) == ("Fritz F.", (FRIEND,))
    bad = await alice.post("/contacts", name="", numbers="")
    assert bad.status_code == 400


async def test_sign_out_ends_the_session(alice: WebClient) -> None:
    answer = await alice.post("/signout")
    assert answer.headers["location"] == "/signin"
    assert (await alice.get("/inbox")).status_code == 303


async def test_a_blocked_account_or_a_new_password_ends_its_sessions(
    services: Services, alice: WebClient
) -> None:
    await services.accounts.change_password("alice", "a-new-password")
    assert (await alice.get("/inbox")).headers["location"] == "/signin"
    assert (await alice.sign_in("alice", "a-new-password")).status_code == 303
    await services.accounts.block("alice")
    assert (await alice.get("/inbox")).headers["location"] == "/signin"
    assert (await alice.sign_in("alice", "a-new-password")).status_code == 403


async def test_pages_forbid_framing_inline_scripts_and_other_origins(alice: WebClient) -> None:
    answer = await alice.get("/inbox")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in answer.text  # every script is a file of smsinbox's own
    assert (await alice.get("/static/vendor/htmx-2.0.11.min.js")).status_code == 200


async def test_the_event_stream_tells_of_new_messages_and_catches_up(
    services: Services, alice: WebClient
) -> None:
    page = (await alice.get("/inbox")).text
    seen = re.search(r"/events\?seen=(\d+)", page)
    assert seen is not None
    async with alice.http.stream("GET", "/events", params={"seen": seen.group(1)}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()
        await receive(services, "live one")
        event = await asyncio.wait_for(next_event(lines), 10)
    assert event["event"] == "message" and int(event["id"]) > int(seen.group(1))
    # Away meanwhile: a reconnect with the last id it got is told at once.
    await receive(services, "while away")
    async with alice.http.stream("GET", "/events", headers={"last-event-id": event["id"]}) as again:
        caught_up = await asyncio.wait_for(next_event(again.aiter_lines()), 10)
    assert int(caught_up["id"]) > int(event["id"])


async def next_event(lines: AsyncIterator[str]) -> dict[str, str]:
    event: dict[str, str] = {}
    async for line in lines:
        if not line.strip():
            if "id" in event:
                return event
            event = {}
            continue
        name, _, value = line.partition(":")
        if name:  # a line starting with ":" is a comment (a ping)
            event[name] = value.strip()
    raise AssertionError("the stream ended")


async def principal(services: Services):  # type: ignore[no-untyped-def]
    from smsinbox.core.sessions import Principal

    found = await services.store.get_account("alice")
    assert found is not None
    return Principal(found.id, "alice", (ALICE,), None)


def test_csrf_of_reads_the_hidden_field() -> None:
    assert csrf_of('<input type="hidden" name="csrf" value="abc">') == "abc"
