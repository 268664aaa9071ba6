"""`smsinbox push`: where accounts' messages are pushed, and the deliveries."""

from __future__ import annotations

from typing import Annotated

import typer

from smsinbox.cli.base import (
    push_app,
    run,
    when,
)
from smsinbox.services import Services


@push_app.command("add")
def push_add(
    ctx: typer.Context,
    username: str,
    url: str,
    format: Annotated[str, typer.Option(help="standard, mc5 or eapi.")] = "standard",
    events: Annotated[str, typer.Option(help="Comma-separated: mo, status.")] = "mo",
) -> None:
    """Push USERNAME's messages to URL; for standard, prints the signing secret last."""

    async def work(services: Services) -> tuple[int, str | None]:
        endpoint = await services.push.add(username, url, format=format, events=events)
        return endpoint.id, endpoint.secret

    endpoint_id, secret = run(ctx, work)
    typer.echo(f"push endpoint {endpoint_id} added for {username} ({format}, {events})")
    if secret is not None:
        typer.echo("sign-check deliveries with this secret (shown only here and in push list):")
        typer.echo(secret)


@push_app.command("list")
def push_list(ctx: typer.Context, username: str) -> None:
    """USERNAME's push endpoints: id, state, format, events, URL, secret or why disabled."""

    async def work(services: Services) -> None:
        for endpoint in await services.push.endpoints_of(username):
            state = "enabled" if endpoint.enabled else f"disabled: {endpoint.disabled_reason}"
            typer.echo(
                f"{endpoint.id}\t{state}\t{endpoint.format}\t{','.join(endpoint.events)}\t"
                f"{endpoint.url}\t{endpoint.secret or '-'}"
            )

    run(ctx, work)


@push_app.command("remove")
def push_remove(ctx: typer.Context, endpoint_id: int) -> None:
    """Remove a push endpoint and its pending deliveries."""

    async def work(services: Services) -> None:
        await services.push.remove(endpoint_id)

    run(ctx, work)
    typer.echo(f"push endpoint {endpoint_id} removed")


@push_app.command("deliveries")
def push_deliveries(
    ctx: typer.Context,
    username: str,
    failed: Annotated[bool, typer.Option("--failed", help="Only failed attempts.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
) -> None:
    """The attempt log, newest first: time, delivery, message, state, HTTP status, latency,
    error, URL."""

    async def work(services: Services) -> None:
        for attempt in await services.push.attempts(username, failed_only=failed, limit=limit):
            typer.echo(
                f"{when(attempt.attempted_at)}\tdelivery {attempt.delivery_id}\t"
                f"message {attempt.message_id}\t{attempt.state}\t"
                f"{attempt.http_status or '-'}\t{attempt.latency_ms}ms\t"
                f"{attempt.error or '-'}\t{attempt.url}"
            )

    run(ctx, work)


@push_app.command("replay")
def push_replay(
    ctx: typer.Context,
    username: str,
    since: Annotated[str, typer.Option(help="Epoch seconds, or 'YYYY-MM-DD HH:MM[:SS]' (UTC).")],
) -> None:
    """Queue again every push of USERNAME's messages received since TIME."""

    async def work(services: Services) -> int:
        return await services.push.replay(username, since)

    typer.echo(f"{run(ctx, work)} deliveries queued")
