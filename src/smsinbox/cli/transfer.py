"""`smsinbox export` and `smsinbox import`: an account moved between stores (SQLite and
PostgreSQL, either way) as a JSON Lines file, ids and sync state kept (core/transfer.py)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from smsinbox.cli.base import DryRunOption, Exit, JsonOption, app, fail, print_json, run
from smsinbox.cli.progress import progress
from smsinbox.core.transfer import AccountTransfer, TransferSummary
from smsinbox.errors import InvalidRecord
from smsinbox.services import Services

STDIO = "-"


@app.command("export")
def export_account(
    ctx: typer.Context,
    username: str,
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", metavar="FILE|-", help="Where to write it (default: standard output)."
        ),
    ] = STDIO,
    json: JsonOption = False,
) -> None:
    """Write USERNAME's account, with everything its clients rely on, as a JSON Lines file.

    The answer goes to stdout, or to stderr when the file itself goes to stdout.
    """

    async def work(services: Services) -> TransferSummary:
        with _destination(output) as sink, progress(f"exporting {username}") as tracker:
            return await AccountTransfer(services.store).export_account(
                username,
                sink.write,
                on_total=tracker.set_total,
                on_record=tracker.advance,
            )

    summary = run(ctx, work)
    answer = sys.stderr if output == STDIO else sys.stdout
    if json:
        document = {"account": summary.account, "output": output, "records": summary.records,
                    "counts": summary.counts}  # fmt: skip
        if answer is sys.stdout:
            print_json(document)
        else:
            with contextlib.redirect_stdout(sys.stderr):
                print_json(document)
        return
    where = "standard output" if output == STDIO else output
    typer.echo(
        f"exported {summary.account} to {where}: {summary.records} records ({_counted(summary)})",
        err=answer is sys.stderr,
    )


@app.command("import")
def import_account(
    ctx: typer.Context,
    file: Annotated[
        str, typer.Argument(metavar="FILE|-", help="An `smsinbox export` file ('-': stdin).")
    ],
    dry_run: DryRunOption = False,
    json: JsonOption = False,
) -> None:
    """Store the account of an `smsinbox export` file here, with its ids: all or nothing.

    Refused when this store has the account, one of its numbers or one of its ids.

    Every line is checked: an invalid file exits with 65, naming the line.

    The store must exist (`smsinbox db upgrade` creates one). --dry-run checks everything
    against it and writes nothing.
    """
    source, size = _source(file)

    async def work(services: Services) -> TransferSummary | InvalidRecord:
        with progress(f"importing {file}", size) as tracker:
            try:
                return await AccountTransfer(services.store).import_account(
                    source, dry_run=dry_run, on_line=tracker.advance
                )
            except InvalidRecord as error:
                return error

    try:
        outcome = run(ctx, work)
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    if isinstance(outcome, InvalidRecord):
        fail(f"{file}: {outcome.detail}", Exit.DATA_ERR)
    if json:
        print_json({"account": outcome.account, "dry_run": dry_run, "records": outcome.records,
                    "counts": outcome.counts, "created": outcome.added})  # fmt: skip
        return
    created = ", ".join(f"{kind}={count}" for kind, count in outcome.added.items())
    if dry_run:
        typer.echo(
            f"dry run: {outcome.account} can be imported: {outcome.records} records "
            f"({_counted(outcome)}); would create {created}; nothing written"
        )
    else:
        typer.echo(
            f"imported {outcome.account}: {outcome.records} records ({_counted(outcome)}); "
            f"created {created}"
        )


def _counted(summary: TransferSummary) -> str:
    return " ".join(f"{kind}={count}" for kind, count in summary.counts.items() if count)


@contextlib.contextmanager
def _destination(output: str) -> Iterator[BinaryIO]:
    """Standard output, or a file that appears under its name only once it is whole: a
    failed export leaves no file behind that could be taken for one."""
    if output == STDIO:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    path = Path(output)
    partial = path.with_name(path.name + ".partial")
    try:
        sink = partial.open("wb")
    except OSError as error:
        fail(f"cannot write {output}: {error.strerror}", Exit.USAGE)
    try:
        with sink:
            yield sink
            sink.flush()
            os.fsync(sink.fileno())
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _source(file: str) -> tuple[BinaryIO, int | None]:
    """The file to read and its size (None for a pipe)."""
    if file == STDIO:
        return sys.stdin.buffer, None
    try:
        source = Path(file).open("rb")  # noqa: SIM115 (closed after the command)
    except OSError as error:
        fail(f"cannot read {file}: {error.strerror}", Exit.USAGE)
    size = os.fstat(source.fileno()).st_size
    return source, size or None
