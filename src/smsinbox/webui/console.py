"""The operator's console under /operator: what `smsinbox` (the CLI) and the admin API do,
in a browser. Signed in with the admin token; without one set, the console does not exist.

Every action is a call of the same core operation the CLI makes (accounts, numbers, the
unrouted box, upstream tokens, push endpoints and replay); the figures are the ones
/metrics exports, read from the store when the page is asked for.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from smsinbox.core.caller import Caller
from smsinbox.core.clock import now_ms
from smsinbox.core.websessions import WebSession, WebSessions
from smsinbox.errors import (
    AuthenticationFailed,
    DomainError,
    InvalidInput,
    LoginLockedOut,
    StoreUnavailable,
)
from smsinbox.models import AccountStatus
from smsinbox.webui.render import page
from smsinbox.webui.security import (
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    Form,
    clear_cookie,
    form_of,
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

SIGNIN_FORM_S = 3600
UNROUTED_SHOWN = 500
ATTEMPTS_SHOWN = 100

# Notices a redirect may ask a page to show, by name.
NOTICES = {
    "account_added": "Account created.",
    "blocked": "Account blocked: its sessions end and its API calls are refused.",
    "unblocked": "Account unblocked.",
    "activated": "Account activated.",
    "password": "Password changed: the account's sessions and auth tokens have ended.",
    "number_added": "Number added.",
    "region": "Region changed: numbers written nationally are read in it from now on.",
    "number_removed": "Number removed.",
    "assigned": "Number assigned: its waiting messages are in the account now.",
    "upstream_revoked": "Upstream token revoked.",
    "endpoint_added": "Push endpoint added.",
    "endpoint_removed": "Push endpoint removed.",
    "replayed": "Deliveries queued again.",
}


def _context(session: WebSession | None, request: Request, **values: Any) -> dict[str, Any]:
    notice = NOTICES.get(request.query_params.get("notice", ""))
    return {"session": session, "notice": notice, "error": None, **values}


def account_path(username: str, notice: str | None = None) -> str:
    path = "/operator/accounts/" + quote(username, safe="")
    return path + (f"?notice={notice}" if notice else "")


# --- signing in and out ----------------------------------------------------------------------


def _signin_page(request: Request, *, error: str | None = None, status: int = 200) -> Response:
    if not services_of(request).web_sessions.console_enabled:
        return with_headers(not_found(None))
    token = signin_token(request)
    response = page(
        "operator/signin.html",
        {"session": None, "title": "Operator sign-in", "csrf": token, "error": error},
        status=status,
    )
    set_cookie(response, request, SIGNIN_COOKIE, token, SIGNIN_FORM_S)
    return with_headers(response)


async def signin_form(request: Request) -> Response:
    """GET /operator/signin"""
    return _signin_page(request)


async def signin(request: Request) -> Response:
    """POST /operator/signin — the admin token."""
    services = services_of(request)
    sessions: WebSessions = services.web_sessions
    if not sessions.console_enabled:
        return with_headers(not_found(None))
    try:
        form = await Form.read(request)
    except InvalidInput as error:
        return _signin_page(request, status=400, error=error.detail)
    if not same_token(form.get("csrf"), request.cookies.get(SIGNIN_COOKIE, "")):
        return _signin_page(request, status=403,
                            error="The sign-in form had expired. Please try again.")  # fmt: skip
    try:
        token = await sessions.sign_in_operator(
            form.get("token"), Caller.of("web-operator", request.client)
        )
    except AuthenticationFailed:
        return _signin_page(request, status=401, error="That is not the admin token.")
    except LoginLockedOut as error:
        return locked_out(_signin_page(request, status=429, error=locked_out_message(error)), error)
    except StoreUnavailable:
        return with_headers(unavailable())
    return session_started(request, token, "/operator")


@signed_in(operator=True)
async def signout(request: Request, session: WebSession) -> Response:
    """POST /operator/signout"""
    await services_of(request).web_sessions.sign_out(request.cookies.get(SESSION_COOKIE))
    response = see_other("/operator/signin")
    clear_cookie(response, request, SESSION_COOKIE)
    return response


# --- the overview ----------------------------------------------------------------------------


@signed_in(operator=True)
async def overview(request: Request, session: WebSession) -> Response:
    """GET /operator — the figures /metrics has, and the retention settings."""
    services = services_of(request)
    store = services.store
    depth, oldest = await store.queue_figures()
    queued, retrying = await store.outbound_figures()
    accounts = await store.list_accounts()
    settings = services.settings
    figures = {
        "accounts": len(accounts),
        "blocked": sum(1 for a in accounts if a.status is AccountStatus.BLOCKED),
        "ingested_last_minute": services.metrics.ingested_last_minute(),
        "unrouted": await store.count_unrouted(),
        "push_backlog": depth,
        "push_oldest_s": None if oldest is None else max(0, (now_ms() - oldest) // 1000),
        "outbound_queued": queued,
        "outbound_retrying": retrying,
    }
    retention = {
        "max_messages": settings.retention_max_messages,
        "max_age_days": settings.retention_max_age_days,
        "interval_s": settings.retention_interval,
        "tombstone_days": settings.sync_tombstone_days,
    }
    binds = await store.list_smpp_binds()
    states = services.smpp.states()
    return page(
        "operator/overview.html",
        _context(session, request, title="Overview", figures=figures, retention=retention,
                 binds=[(bind, states.get(bind.name)) for bind in binds]),
    )  # fmt: skip


# --- accounts and numbers --------------------------------------------------------------------


@signed_in(operator=True)
async def accounts(request: Request, session: WebSession) -> Response:
    """GET /operator/accounts — every account, and the form for a new one."""
    listed = await services_of(request).store.list_accounts()
    return page(
        "operator/accounts.html",
        _context(session, request, title="Accounts", accounts=listed, values={}),
    )


@signed_in(operator=True)
async def add_account(request: Request, session: WebSession) -> Response:
    """POST /operator/accounts"""
    services = services_of(request)
    form = form_of(request)
    username = form.text("username").strip()
    try:
        await services.accounts.add(
            username,
            form.text("password"),
            msisdns=tuple(form.text("numbers").replace(",", " ").split()),
            time_zone=form.get("time_zone") or None,
            region=form.get("region") or None,
        )
    except DomainError as error:
        if isinstance(error, StoreUnavailable):
            raise
        listed = await services.store.list_accounts()
        values = {"username": username, "numbers": form.text("numbers"),
                  "time_zone": form.text("time_zone"), "region": form.text("region")}  # fmt: skip
        return page(
            "operator/accounts.html",
            _context(session, request, title="Accounts", accounts=listed, values=values,
                     error=error.detail),
            status=400,
        )  # fmt: skip
    return see_other(account_path(username, "account_added"))


async def _account_page(
    request: Request, session: WebSession, username: str, *, error: str | None = None,
    status: int = 200,
) -> Response:  # fmt: skip
    services = services_of(request)
    summary = next((a for a in await services.store.list_accounts() if a.username == username),
                   None)  # fmt: skip
    if summary is None:
        return not_found(session, "There is no such account.")
    endpoints = await services.push.endpoints_of(username)
    failed = await services.push.attempts(username, failed_only=True, limit=ATTEMPTS_SHOWN)
    return page(
        "operator/account.html",
        _context(session, request, title=username, account=summary, endpoints=endpoints,
                 failed=failed, error=error),
        status=status,
    )  # fmt: skip


@signed_in(operator=True)
async def account(request: Request, session: WebSession) -> Response:
    """GET /operator/accounts/{username} — status, numbers, password, push endpoints."""
    return await _account_page(request, session, request.path_params["username"])


ACTIONS = {
    "block": ("block", "blocked"),
    "unblock": ("unblock", "unblocked"),
    "activate": ("activate", "activated"),
}


@signed_in(operator=True)
async def change_account(request: Request, session: WebSession) -> Response:
    """POST /operator/accounts/{username} — one change, named by the form's `action`."""
    services = services_of(request)
    form = form_of(request)
    username = request.path_params["username"]
    action = form.text("action")
    try:
        if action in ACTIONS:
            method, notice = ACTIONS[action]
            await getattr(services.accounts, method)(username)
        elif action == "password":
            await services.accounts.change_password(username, form.text("password"))
            notice = "password"
        elif action == "region":
            await services.accounts.set_region(username, form.text("region"))
            notice = "region"
        elif action == "add_number":
            await services.accounts.add_number(form.text("number"), username)
            notice = "number_added"
        elif action == "remove_number":
            # Only a number of this account's: its page must not take another's away.
            await services.accounts.remove_number(form.text("number"), owner=username)
            notice = "number_removed"
        elif action == "add_endpoint":
            await services.push.add(username, form.get("url"), format=form.text("format"),
                                    events=form.text("events") or "mo")  # fmt: skip
            notice = "endpoint_added"
        elif action == "remove_endpoint":
            await services.push.remove_of(username, form.get("endpoint"))
            notice = "endpoint_removed"
        elif action == "replay":
            await services.push.replay(username, form.get("since"))
            notice = "replayed"
        else:
            return not_found(session, "There is no such action.")
    except DomainError as error:
        if isinstance(error, StoreUnavailable):
            raise
        return await _account_page(request, session, username, error=error.detail, status=400)
    return see_other(account_path(username, notice))


# --- the unrouted box ------------------------------------------------------------------------


async def _unrouted_page(
    request: Request, session: WebSession, *, error: str | None = None, status: int = 200
) -> Response:
    services = services_of(request)
    waiting = await services.store.list_unrouted(UNROUTED_SHOWN)
    by_number: dict[str, list[Any]] = {}
    for message in waiting:
        by_number.setdefault(message.recipient, []).append(message)
    usernames = [a.username for a in await services.store.list_accounts()]
    return page(
        "operator/unrouted.html",
        _context(session, request, title="Unrouted messages", by_number=by_number,
                 usernames=usernames, shown=UNROUTED_SHOWN, total=len(waiting), error=error),
        status=status,
    )  # fmt: skip


@signed_in(operator=True)
async def unrouted(request: Request, session: WebSession) -> Response:
    """GET /operator/unrouted — messages to numbers nobody owns, by number."""
    return await _unrouted_page(request, session)


@signed_in(operator=True)
async def assign(request: Request, session: WebSession) -> Response:
    """POST /operator/unrouted — give a number to an account; its messages follow."""
    form = form_of(request)
    try:
        await services_of(request).ingestor.assign_unrouted(
            form.text("number"), form.text("username")
        )
    except DomainError as error:
        if isinstance(error, StoreUnavailable):
            raise
        return await _unrouted_page(request, session, error=error.detail, status=400)
    return see_other("/operator/unrouted?notice=assigned")


# --- upstream tokens -------------------------------------------------------------------------


async def _upstreams_page(request: Request, session: WebSession, **values: Any) -> Response:
    listed = await services_of(request).upstreams.list()
    status = values.pop("status", 200)
    return page(
        "operator/upstreams.html",
        _context(session, request, title="Upstream tokens", upstreams=listed,
                 created=None, **values),
        status=status,
    )  # fmt: skip


@signed_in(operator=True)
async def upstreams(request: Request, session: WebSession) -> Response:
    """GET /operator/upstreams"""
    return await _upstreams_page(request, session)


@signed_in(operator=True)
async def change_upstreams(request: Request, session: WebSession) -> Response:
    """POST /operator/upstreams — create a token (shown this once) or revoke one."""
    services = services_of(request)
    form = form_of(request)
    try:
        if form.text("action") == "revoke":
            await services.upstreams.revoke(form.text("name"))
            return see_other("/operator/upstreams?notice=upstream_revoked")
        credential, secret = await services.upstreams.create(form.text("name").strip())
    except DomainError as error:
        if isinstance(error, StoreUnavailable):
            raise
        return await _upstreams_page(request, session, error=error.detail, status=400)
    # Not a redirect: the token is shown once, here, and never stored in the clear.
    listed = await services.upstreams.list()
    return page(
        "operator/upstreams.html",
        _context(session, request, title="Upstream tokens", upstreams=listed,
                 created=(credential.name, secret)),
    )  # fmt: skip
