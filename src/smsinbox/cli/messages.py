"""`smsinbox inject`, `messages`, `prune`, `recount` and `unrouted`: messages, their retention
and their conversations."""

from __future__ import annotations

from typing import Annotated

import typer

from smsinbox.cli.base import (
    DryRunOption,
    JsonOption,
    app,
    iso_time,
    print_json,
    printable,
    run,
    unrouted_app,
    when,
)
from smsinbox.cli.progress import progress
from smsinbox.core.ingest import RawInbound
from smsinbox.core.retention import PruneReport
from smsinbox.models import IngestOutcome, Message, UnroutedMessage
from smsinbox.services import Services
from smsinbox.store.conversations import Recount


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
    json: JsonOption = False,
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
    if json:
        print_json({"id": identifier, "outcome": outcome.value})
        return
    if outcome is IngestOutcome.UNROUTED:
        typer.echo(f"no account owns {recipient}: kept in the unrouted box", err=True)
    typer.echo(identifier)


@app.command()
def messages(
    ctx: typer.Context,
    username: str,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    json: JsonOption = False,
) -> None:
    """Show an account's newest messages, newest first."""

    async def work(services: Services) -> list[Message]:
        return await services.store.list_recent_messages(username, limit)

    found = run(ctx, work)
    if json:
        print_json([_message_json(message) for message in found])
        return
    for message in found:
        reply = f" reply-to={message.reply_to_id}" if message.reply_to_id else ""
        typer.echo(
            f"{message.id}\t{when(message.received_at)}\t{message.direction.value}\t"
            f"{message.status}\t{message.sender} -> {message.recipient}\t"
            f"{message.encoding.value}{reply}\t{printable(message.text)}"
        )


def _message_json(message: Message) -> dict[str, object]:
    return {
        "id": message.id,
        "received_at": iso_time(message.received_at),
        "direction": message.direction.value,
        "status": str(message.status),
        "sender": message.sender,
        "recipient": message.recipient,
        "encoding": message.encoding.value,
        "reply_to_id": message.reply_to_id,
        "read": message.read,
        "locked": message.locked,
        "text": message.text,
    }


@app.command()
def prune(ctx: typer.Context, dry_run: DryRunOption = False, json: JsonOption = False) -> None:
    """Apply the retention limits now (the server also does it every retention_interval)."""

    async def work(services: Services) -> PruneReport:
        plan = await services.retention.plan()
        if dry_run:
            return plan
        with progress("pruning", plan.by_count + plan.by_age + plan.tombstones) as tracker:
            return await services.retention.prune_once(tracker.advance)

    report = run(ctx, work)
    if json:
        print_json(
            {"by_count": report.by_count, "by_age": report.by_age,
             "tombstones": report.tombstones, "dry_run": dry_run}
        )  # fmt: skip
        return
    verb = "would prune" if dry_run else "pruned"
    typer.echo(
        f"{verb} {report.by_count} message(s) over the per-account cap, {report.by_age} past "
        f"the age limit, {report.tombstones} expired delete(s) kept for device sync"
    )


@unrouted_app.command("list")
def unrouted_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1)] = 1000,
    json: JsonOption = False,
) -> None:
    """Messages waiting for an account to own their number, oldest first."""

    async def work(services: Services) -> list[UnroutedMessage]:
        return await services.store.list_unrouted(limit)

    found = run(ctx, work)
    if json:
        print_json(
            [
                {
                    "id": message.id,
                    "received_at": iso_time(message.received_at),
                    "sender": message.sender,
                    "recipient": message.recipient,
                    "encoding": message.encoding.value,
                    "text": message.text,
                }
                for message in found
            ]
        )
        return
    for message in found:
        typer.echo(
            f"{message.id}\t{when(message.received_at)}\t{message.sender} -> "
            f"{message.recipient}\t{message.encoding.value}\t{printable(message.text)}"
        )


@unrouted_app.command("assign")
def unrouted_assign(
    ctx: typer.Context, msisdn: str, username: str, json: JsonOption = False
) -> None:
    """Give MSISDN to USERNAME and move the messages waiting for it into that account."""

    async def work(services: Services) -> int:
        return await services.ingestor.assign_unrouted(msisdn, username)

    moved = run(ctx, work)
    if json:
        print_json({"number": msisdn, "username": username, "moved": moved})
        return
    typer.echo(f"{msisdn} now belongs to {username}; {moved} waiting message(s) moved")


@app.command()
def recount(
    ctx: typer.Context,
    usernames: Annotated[
        list[str] | None, typer.Argument(help="The accounts to recount (default: every one).")
    ] = None,
    dry_run: DryRunOption = False,
    json: JsonOption = False,
) -> None:
    """Rebuild conversations (counts, unread, latest message) from the messages themselves.

    For a store edited by hand or restored in part; the server keeps them right by itself.
    """

    async def work(services: Services) -> list[tuple[str, Recount]]:
        names = usernames or [account.username for account in await services.store.list_accounts()]
        done: list[tuple[str, Recount]] = []
        with progress("recounting", len(names)) as tracker:
            for name in names:
                done.append((name, await services.store.recount_account(name, dry_run=dry_run)))
                tracker.advance()
        return done

    results = run(ctx, work)
    if json:
        print_json(
            [
                {"username": name, "conversations": r.conversations, "added": r.added,
                 "corrected": r.corrected, "removed": r.removed, "dry_run": dry_run}
                for name, r in results
            ]
        )  # fmt: skip
        return
    verb = "would fix" if dry_run else "fixed"
    for name, r in results:
        typer.echo(
            f"{name}\t{r.conversations} conversation(s)\t{verb} {r.added} missing, "
            f"{r.corrected} wrong, {r.removed} without messages"
        )
