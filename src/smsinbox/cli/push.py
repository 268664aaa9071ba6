"""`smsinbox push`: where accounts' messages are pushed, and the deliveries."""

from __future__ import annotations

from typing import Annotated

import typer

from smsinbox.cli.base import (
    DryRunOption,
    JsonOption,
    iso_time,
    print_json,
    push_app,
    run,
    when,
)
from smsinbox.cli.progress import progress
from smsinbox.services import Services
from smsinbox.store.push import AttemptRecord, Endpoint


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
def push_list(ctx: typer.Context, username: str, json: JsonOption = False) -> None:
    """USERNAME's push endpoints: id, state, format, events, URL, secret or why disabled."""

    async def work(services: Services) -> list[Endpoint]:
        return await services.push.endpoints_of(username)

    endpoints = run(ctx, work)
    if json:
        print_json(
            [
                {
                    "id": endpoint.id,
                    "enabled": endpoint.enabled,
                    "disabled_reason": endpoint.disabled_reason,
                    "format": endpoint.format,
                    "events": list(endpoint.events),
                    "url": endpoint.url,
                    "secret": endpoint.secret,
                }
                for endpoint in endpoints
            ]
        )
        return
    for endpoint in endpoints:
        state = "enabled" if endpoint.enabled else f"disabled: {endpoint.disabled_reason}"
        typer.echo(
            f"{endpoint.id}\t{state}\t{endpoint.format}\t{','.join(endpoint.events)}\t"
            f"{endpoint.url}\t{endpoint.secret or '-'}"
        )


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
    json: JsonOption = False,
) -> None:
    """The attempt log, newest first: time, delivery, message, state, HTTP status, latency,
    error, URL."""

    async def work(services: Services) -> list[AttemptRecord]:
        return await services.push.attempts(username, failed_only=failed, limit=limit)

    attempts = run(ctx, work)
    if json:
        print_json(
            [
                {
                    "attempted_at": iso_time(attempt.attempted_at),
                    "delivery_id": attempt.delivery_id,
                    "message_id": attempt.message_id,
                    "state": str(attempt.state),
                    "http_status": attempt.http_status,
                    "latency_ms": attempt.latency_ms,
                    "error": attempt.error,
                    "url": attempt.url,
                }
                for attempt in attempts
            ]
        )
        return
    for attempt in attempts:
        typer.echo(
            f"{when(attempt.attempted_at)}\tdelivery {attempt.delivery_id}\t"
            f"message {attempt.message_id}\t{attempt.state}\t"
            f"{attempt.http_status or '-'}\t{attempt.latency_ms}ms\t"
            f"{attempt.error or '-'}\t{attempt.url}"
        )


@push_app.command("replay")
def push_replay(
    ctx: typer.Context,
    username: str,
    since: Annotated[str, typer.Option(help="Epoch seconds, or 'YYYY-MM-DD HH:MM[:SS]' (UTC).")],
    dry_run: DryRunOption = False,
    json: JsonOption = False,
) -> None:
    """Queue again every push of USERNAME's messages received since TIME."""

    async def work(services: Services) -> int:
        total = await services.push.messages_to_replay(username, since)
        with progress("replaying", total) as tracker:
            return await services.push.replay(
                username, since, dry_run=dry_run, progress=tracker.advance
            )

    queued = run(ctx, work)
    if json:
        print_json({"queued": queued, "dry_run": dry_run})
    elif dry_run:
        typer.echo(f"{queued} deliveries would be queued")
    else:
        typer.echo(f"{queued} deliveries queued")
