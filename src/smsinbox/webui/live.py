"""GET /events: the server-sent events that keep a signed-in user's pages current.

Each event says the account's mailbox has a new version (its id); the page fetches its own
region again (htmx, `hx-trigger="sse:message"`). A page starts its stream from the version it
was rendered at (`?seen=`), and a browser that reconnects sends the last id it got
(`Last-Event-ID`), so a change made while it connected, or while it was away, is told at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response

from smsinbox.core.live import LiveMailboxes
from smsinbox.core.values import parse_count
from smsinbox.core.websessions import WebSession
from smsinbox.webui.security import signed_in

PING_S = 15  # a comment line now and then: proxies keep the stream open


@signed_in()
async def events(request: Request, session: WebSession) -> Response:
    assert session.principal is not None
    live: LiveMailboxes = request.app.state.services.live
    account_id = session.principal.account_id
    seen = parse_count(request.headers.get("last-event-id") or request.query_params.get("seen", ""))

    async def versions() -> AsyncIterator[dict[str, str]]:
        async for version in live.changes(account_id, seen):
            yield {"event": "message", "id": str(version), "data": str(version)}

    return EventSourceResponse(versions(), ping=PING_S)
