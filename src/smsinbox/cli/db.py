"""`smsinbox db`: the database schema: create or upgrade it, see where it is, step back."""

from __future__ import annotations

from typing import Annotated

import typer

from smsinbox.cli.base import DryRunOption, Exit, JsonOption, db_app, fail, print_json, run
from smsinbox.services import Services
from smsinbox.store.migrate import current_revision, downgrade, head_revision, history, upgrade


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, json: JsonOption = False) -> None:
    """Create the store, or migrate its schema to this version's; says which it did."""

    async def work(services: Services) -> tuple[str, str | None]:
        before = await current_revision(services.store.db)
        if before != head_revision():
            await upgrade(services.store.db)
        return services.store.db.where, before

    where, before = run(ctx, work, start=False, creates_store=True)
    head = head_revision()
    if json:
        print_json({"database": where, "from": before, "to": head, "changed": before != head})
    elif before is None:
        typer.echo(f"created the smsinbox schema {head} in {where}")
    elif before == head:
        typer.echo(f"{where} is already at the newest schema, {head}")
    else:
        typer.echo(f"migrated {where} from schema {before} to {head}")


@db_app.command("current")
def db_current(ctx: typer.Context, json: JsonOption = False) -> None:
    """The schema revision the store is at, and whether it is this version's."""

    async def work(services: Services) -> tuple[str, str | None]:
        return services.store.db.where, await current_revision(services.store.db)

    where, current = run(ctx, work, start=False)
    head = head_revision()
    if current is None:
        fail(f"no smsinbox schema in {where}: `smsinbox db upgrade` creates it", Exit.NO_STORE)
    if json:
        print_json({"database": where, "revision": current, "head": head})
    elif current == head:
        typer.echo(f"{current} (the newest: up to date)")
    elif current not in {r.revision for r in history()}:
        typer.echo(f"{current} (newer than this version's {head}: run a newer smsinbox)")
    else:
        typer.echo(f"{current} (this version needs {head}: run `smsinbox db upgrade`)")


@db_app.command("history")
def db_history(ctx: typer.Context, json: JsonOption = False) -> None:
    """Every schema revision this version knows, oldest first; the store's is marked."""

    async def work(services: Services) -> str | None:
        return await current_revision(services.store.db)

    current = run(ctx, work, start=False)
    revisions = history()
    if json:
        print_json(
            [
                {
                    "revision": r.revision,
                    "down_revision": r.down_revision,
                    "title": r.title,
                    "current": r.revision == current,
                }
                for r in revisions
            ]
        )
        return
    for revision in revisions:
        mark = "*" if revision.revision == current else " "
        typer.echo(f"{mark} {revision.revision}\t{revision.title}")


@db_app.command("downgrade")
def db_downgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="The revision to go back to ('base': none).")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Do it: what the newer revisions added is dropped.")
    ] = False,
    dry_run: DryRunOption = False,
    json: JsonOption = False,
) -> None:
    """Undo the schema revisions newer than REVISION (before running an older version).

    What they added (tables, columns, indexes) is dropped with its data; take a backup first.
    """
    known = [r.revision for r in history()]
    if revision != "base" and revision not in known:
        fail(f"no schema revision {revision!r}; `smsinbox db history` lists them", Exit.USAGE)
    if not (yes or dry_run):
        fail("downgrading drops what the newer revisions added: add --yes (or --dry-run)",
             Exit.USAGE)  # fmt: skip

    async def work(services: Services) -> tuple[str, str, list[str]]:
        db = services.store.db
        current = await current_revision(db)
        if current is None:
            fail(f"no smsinbox schema in {db.where}", Exit.NO_STORE)
        if current not in known:
            fail(f"{db.where} is at {current}, which this version does not know", Exit.CONFIG)
        keep = 0 if revision == "base" else known.index(revision) + 1
        undone = list(reversed(known[keep : known.index(current) + 1]))
        if undone and not dry_run:
            await downgrade(db, revision)
        return db.where, current, undone

    where, current, undone = run(ctx, work, start=False)
    if json:
        print_json(
            {"database": where, "from": current, "to": revision if undone else current,
             "undone": undone, "dry_run": dry_run}
        )  # fmt: skip
    elif not undone:
        typer.echo(f"{where} is at {current}, not newer than {revision}: nothing to undo")
    elif dry_run:
        typer.echo(f"would undo {', '.join(undone)} in {where}")
    else:
        typer.echo(f"undid {', '.join(undone)} in {where}; it is at {revision} now")
