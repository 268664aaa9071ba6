"""Bring the schema up to date with Alembic, on the connection smsinbox already has."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from smsinbox.store.database import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def include_object(
    obj: object, name: str | None, kind: str, reflected: bool, compare_to: object
) -> bool:
    """Leave the search index out of schema comparisons: it is engine-specific DDL."""
    return not (name or "").startswith("messages_search") and not (name or "").endswith("_trgm")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(db: Database) -> str | None:
    """The revision the database is at, or None for an empty database."""

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with db.snapshot("read_schema_revision") as connection:
        return await connection.run_sync(read)


async def upgrade(db: Database, revision: str = "head") -> None:
    """Migrate to `revision`; safe to run from several processes at once."""

    def run(connection: Connection) -> None:
        db.engine.serialise_migrations(connection)
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with db.transaction("migrate") as connection:
        await connection.run_sync(run)


async def ensure_schema(db: Database) -> None:
    """Upgrade only when behind: the common case costs one small read."""
    if await current_revision(db) != head_revision():
        await upgrade(db)
