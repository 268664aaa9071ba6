"""Push endpoints as the operator manages them: add, list, remove, inspect, replay."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable

from smsinbox.core.clock import Clock, now_ms
from smsinbox.core.ingest import parse_sent_time
from smsinbox.core.values import parse_count
from smsinbox.errors import InvalidInput, MissingParameter, NotFound
from smsinbox.push.addresses import AddressPolicy, RefusedAddress
from smsinbox.push.formats import EVENTS, FORMATS
from smsinbox.store import Store
from smsinbox.store.push import AttemptRecord, Endpoint


def new_signing_secret() -> str:
    """A Standard Webhooks secret: whsec_ and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class PushEndpoints:
    def __init__(self, store: Store, addresses: AddressPolicy, clock: Clock = now_ms) -> None:
        self.store = store
        self.addresses = addresses
        self.clock = clock

    async def add(
        self, username: str, url: str | None, *, format: str = "standard", events: str = "mo"
    ) -> Endpoint:
        if not url:
            raise MissingParameter("url")
        if format not in FORMATS:
            raise InvalidInput(f"format must be one of {', '.join(FORMATS)}", "format")
        wanted = tuple(dict.fromkeys(e.strip() for e in events.split(",") if e.strip()))
        if not wanted or any(e not in EVENTS for e in wanted):
            raise InvalidInput(f"events must be a list of {', '.join(EVENTS)}", "events")
        if format == "eapi" and wanted != ("mo",):
            raise InvalidInput(
                "the eapi format carries incoming messages only: events mo", "events"
            )
        if len(url) > 2048:
            raise InvalidInput("url is too long", "url")
        try:
            await self.addresses.check(url)
        except RefusedAddress as refused:
            raise InvalidInput(str(refused), "url") from None
        return await self.store.add_endpoint(
            username,
            url=url,
            format=format,
            events=wanted,
            secret=new_signing_secret() if format == "standard" else None,
            now=self.clock(),
        )

    async def endpoints_of(self, username: str) -> list[Endpoint]:
        return await self.store.list_endpoints(username)

    async def remove_of(self, username: str, endpoint_id: str | None) -> None:
        """Remove one of the account's endpoints, named by its id as a form gives it."""
        wanted = parse_count(endpoint_id)
        if wanted is None or wanted not in {e.id for e in await self.endpoints_of(username)}:
            raise NotFound(f"{username} has no push endpoint {endpoint_id}")
        await self.remove(wanted)

    async def remove(self, endpoint_id: int) -> None:
        await self.store.remove_endpoint(endpoint_id)

    async def attempts(
        self, username: str, *, failed_only: bool, limit: int = 100
    ) -> list[AttemptRecord]:
        return await self.store.list_attempts(username, failed_only=failed_only, limit=limit)

    async def replay(
        self,
        username: str,
        since: str | None,
        *,
        dry_run: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Queue again every push since `since` (epoch seconds or a UTC date and time);
        returns how many deliveries were queued (`dry_run`: would be). `progress` is told
        how many messages each batch went through."""
        since_ms = self.replay_start(since)
        queued, after_id = 0, 0
        while True:
            step = await self.store.replay_deliveries(
                username, since_ms=since_ms, now=self.clock(), after_id=after_id, dry_run=dry_run
            )
            if not step.messages:
                return queued
            queued += step.queued
            after_id = step.last_id
            if progress is not None:
                progress(step.messages)

    def replay_start(self, since: str | None) -> int:
        """`since` as epoch milliseconds (epoch seconds or a UTC date and time)."""
        since_ms = parse_sent_time(since)
        if since_ms is None:
            raise MissingParameter("since")
        return since_ms

    async def messages_to_replay(self, username: str, since: str | None) -> int:
        """How many of the account's messages a replay since `since` goes through."""
        return await self.store.count_messages_since(username, since_ms=self.replay_start(since))
