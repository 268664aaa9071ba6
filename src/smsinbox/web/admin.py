"""The operator's HTTP API under /admin: push endpoints, their deliveries, replay.

Authenticated by `Authorization: Bearer <admin_token>`; with no admin_token set the whole
API answers 404, as if it did not exist. Answers are JSON; errors are {"error": "..."}.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from smsinbox.core.caller import Caller
from smsinbox.core.values import parse_count
from smsinbox.errors import (
    AlreadyExists,
    DomainError,
    InvalidInput,
    LoginLockedOut,
    NotFound,
    StoreUnavailable,
)
from smsinbox.services import Services
from smsinbox.store.push import Endpoint

STATUS_OF: list[tuple[type[DomainError], int]] = [
    (InvalidInput, 400),
    (NotFound, 404),
    (AlreadyExists, 409),
    (StoreUnavailable, 503),
]

Handler = Callable[[Services, Request], Awaitable[Any]]


def _endpoint(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "username": endpoint.username,
        "url": endpoint.url,
        "format": endpoint.format,
        "events": list(endpoint.events),
        "enabled": endpoint.enabled,
        "disabledReason": endpoint.disabled_reason,
        "secret": endpoint.secret,
    }


def admin(handler: Handler, status: int = 200) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        services: Services = request.app.state.services
        expected = services.settings.admin_token
        if not expected:
            return JSONResponse({"error": "not found"}, status_code=404)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        try:
            attempt = await services.login_guard.admit(Caller.of("admin", request.client), None)
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.encode(), expected.encode()
            ):
                await services.login_guard.failed(attempt)
                return JSONResponse({"error": "admin token required"}, status_code=401)
        except LoginLockedOut as error:
            return JSONResponse(
                {"error": "too many failed logins, retry later"},
                status_code=429,
                headers={"Retry-After": str(error.retry_after_s)},
            )
        except StoreUnavailable:
            return JSONResponse({"error": "temporarily unavailable"}, status_code=503)
        try:
            return JSONResponse(await handler(services, request), status_code=status)
        except DomainError as error:
            code = next((c for kind, c in STATUS_OF if isinstance(error, kind)), 500)
            return JSONResponse({"error": error.detail}, status_code=code)

    endpoint.__name__ = "admin_" + handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise InvalidInput("body must be JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("body must be a JSON object")
    return body


def _username(request: Request) -> str:
    username: str = request.path_params["username"]
    # PostgreSQL cannot take a NUL in a query parameter: it would answer 503, not 400.
    if "\x00" in username:
        raise InvalidInput("username must not contain NUL characters", "username")
    return username


def _url(body: dict[str, Any]) -> str | None:
    """The push URL as given, refused here if it is not text or not a URL at all."""
    url = body.get("url")
    if url is None:
        return None
    if not isinstance(url, str) or "\x00" in url:
        raise InvalidInput("url must be a URL", "url")
    try:
        # A bad IPv6 host or port would be a ValueError deeper down, i.e. a 500.
        _ = urlsplit(url).port
    except ValueError:
        raise InvalidInput("url must be a URL", "url") from None
    return url


async def list_endpoints(services: Services, request: Request) -> Any:
    """GET /admin/accounts/{username}/push — the account's push endpoints."""
    found = await services.push.endpoints_of(_username(request))
    return {"endpoints": [_endpoint(e) for e in found]}


async def add_endpoint(services: Services, request: Request) -> Any:
    """POST /admin/accounts/{username}/push — {"url", "format"?, "events"?: ["mo", ...]}."""
    body = await _json_body(request)
    events = body.get("events", ["mo"])
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise InvalidInput("events must be a list of strings", "events")
    endpoint = await services.push.add(
        _username(request),
        _url(body),
        format=str(body.get("format", "standard")),
        events=",".join(events),
    )
    return _endpoint(endpoint)


async def remove_endpoint(services: Services, request: Request) -> Any:
    """DELETE /admin/push/{endpoint_id} — remove an endpoint and its pending deliveries."""
    endpoint_id = _endpoint_id(request.path_params["endpoint_id"])
    await services.push.remove(endpoint_id)
    return {"removed": endpoint_id}


def _endpoint_id(raw: str) -> int:
    # Parsed here, not by a route convertor: a negative or non-numeric id would otherwise
    # fall through to the router's plain-text 404, and one past 64 bits overflows SQLite.
    endpoint_id = parse_count(raw) if raw == raw.strip() else None
    if endpoint_id is None:
        raise InvalidInput("endpoint id must be a non-negative integer", "endpoint_id")
    return endpoint_id


async def list_attempts(services: Services, request: Request) -> Any:
    """GET /admin/accounts/{username}/push/deliveries?failed=true — the attempt log."""
    failed = request.query_params.get("failed", "").lower() in ("1", "true", "yes")
    attempts = await services.push.attempts(_username(request), failed_only=failed)
    return {
        "attempts": [
            {
                "deliveryId": a.delivery_id,
                "messageId": a.message_id,
                "url": a.url,
                "state": a.state,
                "attemptedAt": a.attempted_at,
                "httpStatus": a.http_status,
                "latencyMs": a.latency_ms,
                "error": a.error,
            }
            for a in attempts
        ]
    }


async def replay(services: Services, request: Request) -> Any:
    """POST /admin/accounts/{username}/push/replay — {"since": epoch seconds or date}."""
    body = await _json_body(request)
    since = body.get("since")
    queued = await services.push.replay(_username(request), None if since is None else str(since))
    return {"queued": queued}


def routes() -> list[Route]:
    base = "/admin/accounts/{username}/push"
    return [
        Route(base, admin(list_endpoints), methods=["GET"]),
        Route(base, admin(add_endpoint, 201), methods=["POST"]),
        Route("/admin/push/{endpoint_id}", admin(remove_endpoint), methods=["DELETE"]),
        Route(base + "/deliveries", admin(list_attempts), methods=["GET"]),
        Route(base + "/replay", admin(replay), methods=["POST"]),
    ]
