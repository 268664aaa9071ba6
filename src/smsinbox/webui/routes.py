"""The web inbox's and the operator console's routes, and their static files (served by
smsinbox itself, no CDN)."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from smsinbox.webui import console, inbox, live

STATIC = Path(__file__).parent / "static"


def routes() -> list[BaseRoute]:
    get, post = ["GET"], ["POST"]
    return [
        Route("/", inbox.home, methods=get),
        Route("/signin", inbox.signin_form, methods=get),
        Route("/signin", inbox.signin, methods=post),
        Route("/signout", inbox.signout, methods=post),
        Route("/inbox", inbox.conversations, methods=get),
        Route("/inbox/{counterpart}", inbox.thread, methods=get),
        Route("/inbox/{counterpart}", inbox.reply, methods=post),
        Route("/compose", inbox.compose_form, methods=get),
        Route("/compose", inbox.compose, methods=post),
        Route("/messages/{message_id}/lock", inbox.lock, methods=post),
        Route("/messages/{message_id}/delete", inbox.delete, methods=post),
        Route("/search", inbox.search, methods=get),
        Route("/events", live.events, methods=get),
        Route("/contacts", inbox.contacts, methods=get),
        Route("/contacts", inbox.add_contact, methods=post),
        Route("/contacts/{contact_id}", inbox.contact, methods=get),
        Route("/contacts/{contact_id}", inbox.edit_contact, methods=post),
        Route("/operator", console.overview, methods=get),
        Route("/operator/signin", console.signin_form, methods=get),
        Route("/operator/signin", console.signin, methods=post),
        Route("/operator/signout", console.signout, methods=post),
        Route("/operator/accounts", console.accounts, methods=get),
        Route("/operator/accounts", console.add_account, methods=post),
        Route("/operator/accounts/{username}", console.account, methods=get),
        Route("/operator/accounts/{username}", console.change_account, methods=post),
        Route("/operator/unrouted", console.unrouted, methods=get),
        Route("/operator/unrouted", console.assign, methods=post),
        Route("/operator/upstreams", console.upstreams, methods=get),
        Route("/operator/upstreams", console.change_upstreams, methods=post),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
