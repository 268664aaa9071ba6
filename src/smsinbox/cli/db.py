"""`smsinbox db`: the database schema."""

from __future__ import annotations

import typer

from smsinbox.cli.base import (
    db_app,
    run,
)
from smsinbox.services import Services
from smsinbox.store.migrate import upgrade


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Migrate the database schema to the latest version."""

    async def work(services: Services) -> None:
        await upgrade(services.store.db)

    run(ctx, work, start=False)
    typer.echo("database is up to date")
