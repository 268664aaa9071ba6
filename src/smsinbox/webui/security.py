"""What every page of the web inbox and console does before and after its handler: the
session from its cookie, CSRF on every form, and the headers that keep pages in their lane.

The session cookie is HttpOnly and SameSite=Lax, and Secure when the request came over TLS
(directly or, with uvicorn's proxy headers, through a proxy that says so). Every POST must
carry the session's CSRF token in its `csrf` field; the sign-in form, before any session
exists, carries the value of a cookie of its own instead (a double submit).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from smsinbox.core.websessions import WebSession, WebSessions
from smsinbox.dialects.params import UnsupportedMediaType, WireParams
from smsinbox.errors import InvalidInput, LoginLockedOut, StoreUnavailable
from smsinbox.services import Services
from smsinbox.webui.render import page

log = logging.getLogger("smsinbox.web")

SESSION_COOKIE = "smsinbox_session"
SIGNIN_COOKIE = "smsinbox_signin"

# Scripts and styles from smsinbox itself only, nothing inline, no frames, forms only to
# smsinbox: an injected tag can neither run nor send anything elsewhere.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class Form:
    """A submitted form's fields as text (UTF-8), the first of a repeated name."""

    def __init__(self, params: WireParams) -> None:
        self._params = params

    @classmethod
    async def read(cls, request: Request) -> Form:
        try:
            return cls(await WireParams.read(request))
        except UnsupportedMediaType:
            raise InvalidInput("send the form URL-encoded", "content-type") from None

    def get(self, name: str) -> str | None:
        return self._params.text(name)

    def text(self, name: str) -> str:
        return self._params.text(name) or ""


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def form_of(request: Request) -> Form:
    """The form of a POST that `signed_in` read and checked."""
    form: Form = request.state.form
    return form


def session_started(request: Request, token: str, home: str) -> Response:
    """A sign-in's answer: the session's cookie, the sign-in form's gone, off to `home`."""
    response = see_other(home)
    set_cookie(response, request, SESSION_COOKIE, token,
               services_of(request).settings.web_session_ttl)  # fmt: skip
    clear_cookie(response, request, SIGNIN_COOKIE)
    return with_headers(response)


def locked_out(form_page: Response, error: LoginLockedOut) -> Response:
    """The sign-in form again, saying when to try again (and a Retry-After for tools)."""
    form_page.headers["Retry-After"] = str(error.retry_after_s)
    return form_page


def locked_out_message(error: LoginLockedOut) -> str:
    return f"Too many failed sign-ins. Try again in {error.retry_after_s} seconds."


def over_tls(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", httponly=True, samesite="lax",
        secure=over_tls(request),
    )  # fmt: skip


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(name, path="/", httponly=True, samesite="lax", secure=over_tls(request))


def see_other(path: str) -> RedirectResponse:
    """Post/redirect/get: a form's answer sends the browser to a page to GET."""
    return RedirectResponse(path, status_code=303)


def local_path(path: str | None, fallback: str) -> str:
    """`path` if it stays on this server (a form's return address), else `fallback`."""
    if path and path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return fallback


def same_token(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest((given or "").encode(), expected.encode())


def signin_token(request: Request) -> str:
    """The sign-in form's CSRF value: its cookie's, or a new one to set."""
    return request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)


Handler = Callable[[Request, WebSession], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def with_headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def unavailable() -> Response:
    return page(
        "error.html",
        {"title": "Temporarily unavailable", "session": None,
         "message": "The message store is unavailable for the moment. Try again shortly."},
        status=503, headers={"Retry-After": "5"},
    )  # fmt: skip


def signed_in(*, operator: bool = False) -> Callable[[Handler], Endpoint]:
    """A page for an account's user (or, with `operator`, for the operator): its session
    from the cookie, a sign-in page for a browser without one, the CSRF check on POST."""

    def wrap(handler: Handler) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            sessions: WebSessions = services_of(request).web_sessions
            try:
                session = await sessions.session(request.cookies.get(SESSION_COOKIE))
                if session is None or session.operator != operator:
                    if operator and not sessions.console_enabled:
                        return with_headers(not_found(None))
                    target = "/operator/signin" if operator else "/signin"
                    return with_headers(see_other(target))
                if request.method == "POST":
                    try:
                        form = await Form.read(request)
                    except InvalidInput as error:
                        return with_headers(bad_request(session, error.detail))
                    if not same_token(form.get("csrf"), session.csrf_token):
                        return with_headers(forbidden(session))
                    request.state.form = form
                response = await handler(request, session)
            except StoreUnavailable:
                response = unavailable()
            return with_headers(response)

        endpoint.__name__ = handler.__name__
        return endpoint

    return wrap


def bad_request(session: WebSession | None, message: str) -> Response:
    return page(
        "error.html", {"title": "Bad request", "session": session, "message": message}, status=400
    )


def forbidden(session: WebSession | None) -> Response:
    return page(
        "error.html",
        {"title": "Form expired", "session": session,
         "message": "This form is out of date. Go back, reload the page and try again."},
        status=403,
    )  # fmt: skip


def not_found(session: WebSession | None, message: str = "There is no such page.") -> Response:
    return page(
        "error.html", {"title": "Not found", "session": session, "message": message}, status=404
    )
