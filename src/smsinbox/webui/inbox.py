"""The web inbox of an account's user: conversations, threads, replies, search, contacts.

Each page calls the same core operations the mysms API does (Mailbox, Contacts), with the
signed-in user as the principal; nothing here decides what may happen to a message.
Forms post, then redirect to the page to show (post/redirect/get), so every page works
without JavaScript; htmx (hx-boost) only spares the reloads, and the event stream
(webui/live.py) brings new messages in as they arrive.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from smsinbox.core.caller import Caller
from smsinbox.core.mailbox import address_of
from smsinbox.core.values import parse_count
from smsinbox.core.websessions import WebSession, WebSessions
from smsinbox.errors import (
    AccountBlocked,
    AccountNeedsActivation,
    AuthenticationFailed,
    DomainError,
    InvalidInput,
    LoginLockedOut,
    MissingParameter,
    StoreUnavailable,
    UnknownAccount,
)
from smsinbox.webui import render
from smsinbox.webui.render import page, thread_path
from smsinbox.webui.security import (
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    Form,
    clear_cookie,
    form_of,
    local_path,
    locked_out,
    locked_out_message,
    not_found,
    same_token,
    see_other,
    services_of,
    session_started,
    set_cookie,
    signed_in,
    signin_token,
    unavailable,
    with_headers,
)

CONVERSATIONS_PAGE = 50
THREAD_PAGE = 50
SEARCH_RESULTS = 100
SIGNIN_FORM_S = 3600

# Notices a redirect may ask a page to show, by name: never text from the URL itself.
NOTICES = {
    "sent": "Message sent.",
    "scheduled": "Message scheduled.",
    "deleted": "Message deleted.",
    "kept": "A locked message is not deleted: unlock it first.",
    "locked": "Message locked: retention keeps it.",
    "unlocked": "Message unlocked.",
    "contact_added": "Contact added.",
    "contact_saved": "Contact saved.",
}


def _context(session: WebSession | None, **values: Any) -> dict[str, Any]:
    return {"session": session, **values}


def _notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("notice", ""))


def _page_number(request: Request) -> int:
    number = parse_count(request.query_params.get("page", "1"))
    return max(1, number or 1)


# --- signing in and out ----------------------------------------------------------------------


def _signin_page(
    request: Request, *, error: str | None = None, login: str = "", status: int = 200
) -> Response:
    token = signin_token(request)
    response = page(
        "signin.html",
        _context(None, title="Sign in", csrf=token, error=error, login=login),
        status=status,
    )
    set_cookie(response, request, SIGNIN_COOKIE, token, SIGNIN_FORM_S)
    return with_headers(response)


async def home(request: Request) -> Response:
    """GET / — the inbox, or the sign-in page."""
    return with_headers(see_other("/inbox"))


async def signin_form(request: Request) -> Response:
    """GET /signin"""
    return _signin_page(request)


async def signin(request: Request) -> Response:
    """POST /signin — username (or number) and password."""
    services = services_of(request)
    try:
        form = await Form.read(request)
    except InvalidInput as error:
        return _signin_page(request, error=error.detail, status=400)
    login = form.text("login").strip()
    if not same_token(form.get("csrf"), request.cookies.get(SIGNIN_COOKIE, "")):
        return _signin_page(request, login=login, status=403,
                            error="The sign-in form had expired. Please try again.")  # fmt: skip
    sessions: WebSessions = services.web_sessions
    try:
        caller = Caller.of("web", request.client)
        token = await sessions.sign_in(login, form.get("password"), caller)
    except (UnknownAccount, AuthenticationFailed):
        return _signin_page(request, login=login, status=401,
                            error="Wrong username or password.")  # fmt: skip
    except MissingParameter:
        return _signin_page(request, login=login, status=400,
                            error="Enter your username or number and your password.")  # fmt: skip
    except AccountBlocked:
        return _signin_page(request, login=login, status=403,
                            error="This account is blocked. Contact your provider.")  # fmt: skip
    except AccountNeedsActivation:
        return _signin_page(request, login=login, status=403,
                            error="This account is not activated yet.")  # fmt: skip
    except LoginLockedOut as error:
        page_again = _signin_page(request, login=login, status=429,
                                  error=locked_out_message(error))  # fmt: skip
        return locked_out(page_again, error)
    except StoreUnavailable:
        return with_headers(unavailable())
    return session_started(request, token, "/inbox")


@signed_in()
async def signout(request: Request, session: WebSession) -> Response:
    """POST /signout"""
    await services_of(request).web_sessions.sign_out(request.cookies.get(SESSION_COOKIE))
    response = see_other("/signin")
    clear_cookie(response, request, SESSION_COOKIE)
    return response


# --- conversations and threads ---------------------------------------------------------------


@signed_in()
async def conversations(request: Request, session: WebSession) -> Response:
    """GET /inbox — conversations, the latest first, a page at a time."""
    assert session.principal is not None
    number = _page_number(request)
    services = services_of(request)
    version = await services.live.version(session.principal.account_id)
    found = await services.mailbox.conversations(
        session.principal, offset=(number - 1) * CONVERSATIONS_PAGE, limit=CONVERSATIONS_PAGE + 1
    )
    unread = await services.mailbox.unread(session.principal)
    return page(
        "inbox.html",
        _context(
            session, title="Inbox", conversations=found[:CONVERSATIONS_PAGE], page=number,
            more=len(found) > CONVERSATIONS_PAGE, unread=unread, notice=_notice(request),
            version=version,
        ),
    )  # fmt: skip


def _counterpart(request: Request, session: WebSession) -> str:
    assert session.principal is not None
    return address_of(session.principal, request.path_params["counterpart"], "counterpart")


@signed_in()
async def thread(request: Request, session: WebSession) -> Response:
    """GET /inbox/{counterpart} — one conversation, the newest message at the bottom.

    Opening it marks it read, as a phone's messaging app does."""
    try:
        counterpart = _counterpart(request, session)
    except InvalidInput:
        return not_found(session, "There is no conversation with this address.")
    return await _thread_page(request, session, counterpart, mark_read=True)


async def _thread_page(
    request: Request, session: WebSession, counterpart: str, *, mark_read: bool,
    error: str | None = None, text: str = "", status: int = 200,
) -> Response:  # fmt: skip
    assert session.principal is not None
    services = services_of(request)
    number = _page_number(request)
    version = await services.live.version(session.principal.account_id)
    messages = await services.mailbox.conversation_messages(
        session.principal, counterpart, offset=(number - 1) * THREAD_PAGE, limit=THREAD_PAGE + 1
    )
    if mark_read and number == 1 and any(not message.read for message in messages):
        await services.mailbox.read_conversation(session.principal, counterpart)
    unread = await services.mailbox.unread(session.principal)
    names = {
        msisdn: contact.name
        for contact in await services.contacts.list(session.principal)
        for msisdn in contact.msisdns
    }
    return page(
        "thread.html",
        _context(
            session, title=names.get(counterpart, counterpart), counterpart=counterpart,
            name=names.get(counterpart), messages=list(reversed(messages[:THREAD_PAGE])),
            page=number, more=len(messages) > THREAD_PAGE, notice=_notice(request),
            error=error, text=text, version=version, unread=unread,
        ),
        status=status,
    )  # fmt: skip


def _send_at(value: str | None, zone_name: str) -> int | None:
    """A `datetime-local` field (the account's zone) as epoch ms; None when empty."""
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput("the send time is not a date and time", "send_at") from None
    return int(moment.replace(tzinfo=render.zone(zone_name)).timestamp() * 1000)


@signed_in()
async def reply(request: Request, session: WebSession) -> Response:
    """POST /inbox/{counterpart} — send a message in this conversation, now or later."""
    assert session.principal is not None
    form = form_of(request)
    counterpart = request.path_params["counterpart"]
    try:
        send_on = _send_at(form.get("send_at"), session.time_zone)
        await services_of(request).mailbox.send(
            session.principal, counterpart, form.get("text"), send_on=send_on, device_id=None
        )
    except DomainError as error:
        if isinstance(error, StoreUnavailable):
            raise
        try:
            shown = _counterpart(request, session)
        except InvalidInput:
            return not_found(session, "There is no conversation with this address.")
        return await _thread_page(request, session, shown, mark_read=False, error=error.detail,
                                  text=form.text("text"), status=400)  # fmt: skip
    # The conversation as stored, however the address in the URL was written.
    shown = _counterpart(request, session)
    return see_other(thread_path(shown, notice="scheduled" if send_on else "sent"))


@signed_in()
async def compose_form(request: Request, session: WebSession) -> Response:
    """GET /compose"""
    return page("compose.html", _context(session, title="New message", error=None, to="", text=""))


@signed_in()
async def compose(request: Request, session: WebSession) -> Response:
    """POST /compose — a message to any number, now or later."""
    assert session.principal is not None
    form = form_of(request)
    to, text = form.text("to").strip(), form.text("text")
    try:
        send_on = _send_at(form.get("send_at"), session.time_zone)
        await services_of(request).mailbox.send(
            session.principal, to, text, send_on=send_on, device_id=None
        )
        counterpart = address_of(session.principal, to, "to")
    except DomainError as error:
        if isinstance(error, StoreUnavailable):
            raise
        return page(
            "compose.html",
            _context(session, title="New message", error=error.detail, to=to, text=text),
            status=400,
        )
    return see_other(thread_path(counterpart, notice="scheduled" if send_on else "sent"))


# --- one message -----------------------------------------------------------------------------


def _message_id(request: Request) -> int | None:
    return parse_count(request.path_params["message_id"])


@signed_in()
async def lock(request: Request, session: WebSession) -> Response:
    """POST /messages/{message_id}/lock — lock (locked=1) or unlock (locked=0)."""
    assert session.principal is not None
    form = form_of(request)
    message_id = _message_id(request)
    back = local_path(form.get("back"), "/inbox")
    locked = form.get("locked") == "1"
    try:
        await services_of(request).mailbox.update(
            session.principal, message_id, read=None, locked=locked
        )
    except DomainError as error:
        if isinstance(error, StoreUnavailable):
            raise
        return not_found(session, "There is no such message.")
    return see_other(_with_notice(back, "locked" if locked else "unlocked"))


@signed_in()
async def delete(request: Request, session: WebSession) -> Response:
    """POST /messages/{message_id}/delete — a locked message stays (unlock it first)."""
    assert session.principal is not None
    form = form_of(request)
    message_id = _message_id(request)
    back = local_path(form.get("back"), "/inbox")
    if message_id is None:
        return not_found(session, "There is no such message.")
    deletion = await services_of(request).mailbox.delete_messages(session.principal, [message_id])
    if deletion.kept_locked:
        return see_other(_with_notice(back, "kept"))
    if not deletion.deleted:
        return not_found(session, "There is no such message.")
    return see_other(_with_notice(back, "deleted"))


def _with_notice(path: str, notice: str) -> str:
    base = path.split("?", 1)[0]
    return f"{base}?notice={notice}"


# --- search ----------------------------------------------------------------------------------


@signed_in()
async def search(request: Request, session: WebSession) -> Response:
    """GET /search?q= — messages whose text or number matches, the newest first."""
    assert session.principal is not None
    query = request.query_params.get("q", "").strip()
    results, error = [], None
    if query:
        try:
            results = await services_of(request).mailbox.search(
                session.principal, query, address=None, locked=None, limit=SEARCH_RESULTS
            )
        except InvalidInput as error_:
            error = error_.detail
    return page(
        "search.html", _context(session, title="Search", query=query, results=results, error=error)
    )


# --- contacts --------------------------------------------------------------------------------


def _numbers(value: str) -> list[str]:
    return [part for part in value.replace(",", " ").split() if part]


@signed_in()
async def contacts(request: Request, session: WebSession) -> Response:
    """GET /contacts"""
    assert session.principal is not None
    listed = await services_of(request).contacts.list(session.principal)
    return page(
        "contacts.html",
        _context(session, title="Contacts", contacts=sorted(listed, key=lambda c: c.name.lower()),
                 notice=_notice(request), error=None, name="", numbers=""),
    )  # fmt: skip


@signed_in()
async def add_contact(request: Request, session: WebSession) -> Response:
    """POST /contacts — a new contact: a name and numbers."""
    assert session.principal is not None
    form = form_of(request)
    services = services_of(request)
    try:
        await services.contacts.create(
            session.principal, form.get("name"), _numbers(form.text("numbers"))
        )
    except DomainError as error:
        if isinstance(error, StoreUnavailable):
            raise
        listed = await services.contacts.list(session.principal)
        return page(
            "contacts.html",
            _context(session, title="Contacts", contacts=listed, notice=None, error=error.detail,
                     name=form.text("name"), numbers=form.text("numbers")),
            status=400,
        )  # fmt: skip
    return see_other("/contacts?notice=contact_added")


@signed_in()
async def contact(request: Request, session: WebSession) -> Response:
    """GET /contacts/{contact_id} — the edit form."""
    assert session.principal is not None
    contact_id = parse_count(request.path_params["contact_id"])
    listed = await services_of(request).contacts.list(session.principal)
    found = next((c for c in listed if c.id == contact_id), None)
    if found is None:
        return not_found(session, "There is no such contact.")
    return page(
        "contact.html",
        _context(session, title=found.name, contact=found, error=None, name=found.name,
                 numbers=" ".join(found.msisdns)),
    )  # fmt: skip


@signed_in()
async def edit_contact(request: Request, session: WebSession) -> Response:
    """POST /contacts/{contact_id}"""
    assert session.principal is not None
    form = form_of(request)
    contact_id = parse_count(request.path_params["contact_id"])
    services = services_of(request)
    try:
        await services.contacts.update(
            session.principal, contact_id, name=form.get("name"),
            msisdns=_numbers(form.text("numbers")),
        )  # fmt: skip
    except DomainError as error:
        if isinstance(error, StoreUnavailable):
            raise
        listed = await services.contacts.list(session.principal)
        found = next((c for c in listed if c.id == contact_id), None)
        if found is None:
            return not_found(session, "There is no such contact.")
        return page(
            "contact.html",
            _context(session, title=found.name, contact=found, error=error.detail,
                     name=form.text("name"), numbers=form.text("numbers")),
            status=400,
        )  # fmt: skip
    return see_other("/contacts?notice=contact_saved")
