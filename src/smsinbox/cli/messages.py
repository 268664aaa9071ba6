"""`smsinbox inject`, `messages`, `prune` and `unrouted`: messages and their retention."""

from __future__ import annotations

from typing import Annotated

import typer

from smsinbox.cli.base import (
    app,
    run,
    unrouted_app,
    when,
)
from smsinbox.core.ingest import RawInbound
from smsinbox.core.retention import PruneReport
from smsinbox.models import IngestOutcome
from smsinbox.services import Services


@app.command()
def inject(
    ctx: typer.Context,
    sender: Annotated[str, typer.Option("--from", help="Sender number or sender id.")],
    recipient: Annotated[str, typer.Option("--to", help="The number it was sent to.")],
    text: Annotated[
        str, typer.Option(help="Message text (for --encoding 8bit/16bit, or use --hex).")
    ] = "",
    hex_body: Annotated[
        str | None, typer.Option("--hex", help="Body as hex (8bit octets, 16bit UTF-16BE).")
    ] = None,
    encoding: Annotated[str, typer.Option(help="7bit, 8bit or 16bit.")] = "7bit",
    ref: Annotated[
        int | None, typer.Option(help="Id of the outgoing message this replies to.")
    ] = None,
    upstream_message_id: Annotated[
        str | None, typer.Option("--id", help="Upstream message id, for de-duplication.")
    ] = None,
) -> None:
    """Ingest one message through the same path as the network; prints its id."""
    raw = RawInbound(
        sender=sender,
        recipient=recipient,
        text=None if hex_body is not None else text.encode("utf-8"),
        hex=hex_body,
        encoding=encoding,
        upstream_message_id=upstream_message_id,
        ref=None if ref is None else str(ref),
    )

    async def work(services: Services) -> tuple[IngestOutcome, int]:
        result = await services.ingestor.accept(raw, upstream_id=None)
        return result.outcome, result.id

    outcome, identifier = run(ctx, work)
    if outcome is IngestOutcome.UNROUTED:
        typer.echo(f"no account owns {recipient}: kept in the unrouted box", err=True)
    typer.echo(identifier)


@app.command()
def messages(
    ctx: typer.Context,
    username: str,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """Show an account's newest messages, newest first."""

    async def work(services: Services) -> None:
        for message in await services.store.list_recent_messages(username, limit):
            reply = f" reply-to={message.reply_to_id}" if message.reply_to_id else ""
            typer.echo(
                f"{message.id}\t{when(message.received_at)}\t{message.direction.value}\t"
                f"{message.status}\t{message.sender} -> {message.recipient}\t"
                f"{message.encoding.value}{reply}\t{message.text!r}"
            )

    run(ctx, work)


@app.command()
def prune(ctx: typer.Context) -> None:
    """Apply the retention limits now (the server also does it every retention_interval)."""

    async def work(services: Services) -> PruneReport:
        return await services.retention.prune_once()

    report = run(ctx, work)
    typer.echo(
        f"pruned {report.by_count} message(s) over the per-account cap, {report.by_age} past "
        f"the age limit, {report.tombstones} expired delete(s) kept for device sync"
    )


@unrouted_app.command("list")
def unrouted_list(ctx: typer.Context, limit: Annotated[int, typer.Option(min=1)] = 1000) -> None:
    """Messages waiting for an account to own their number, oldest first."""

    async def work(services: Services) -> None:
        for message in await services.store.list_unrouted(limit):
            typer.echo(
                f"{message.id}\t{when(message.received_at)}\t{message.sender} -> "
                f"{message.recipient}\t{message.encoding.value}\t{message.text!r}"
            )

    run(ctx, work)


@unrouted_app.command("assign")
def unrouted_assign(ctx: typer.Context, msisdn: str, username: str) -> None:
    """Give MSISDN to USERNAME and move the messages waiting for it into that account."""

    async def work(services: Services) -> int:
        return await services.ingestor.assign_unrouted(msisdn, username)

    moved = run(ctx, work)
    typer.echo(f"{msisdn} now belongs to {username}; {moved} waiting message(s) moved")
