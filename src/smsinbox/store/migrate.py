"""Bring the schema up to date with Alembic, on the connection smsinbox already has.

Alembic is imported only to migrate: a server whose schema is current never loads it
(about 9 MB of resident memory). The revision a database is at is read from Alembic's
own table, and the newest revision there is is HEAD_REVISION, which a test holds equal to
the head of the migration scripts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text

from smsinbox.store.database import Database

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration in migrations/versions (tests/test_migrations.py checks it).
HEAD_REVISION = "0012"


def include_object(
    obj: object, name: str | None, kind: str, reflected: bool, compare_to: object
) -> bool:
    """Leave the search index out of schema comparisons: it is engine-specific DDL."""
    return not (name or "").startswith("messages_search") and not (name or "").endswith("_trgm")


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    return HEAD_REVISION


async def current_revision(db: Database) -> str | None:
    """The revision the database is at, or None for an empty database."""

    def read(connection: Connection) -> str | None:
        if not inspect(connection).has_table("alembic_version"):
            return None
        found = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return None if found is None else str(found)

    async with db.snapshot("read_schema_revision") as connection:
        return await connection.run_sync(read)


async def upgrade(db: Database, revision: str = "head") -> None:
    """Migrate to `revision`; safe to run from several processes at once."""
    await _migrate(db, "migrate", "upgrade", revision)


async def _migrate(db: Database, name: str, direction: str, revision: str) -> None:
    """Alembic's `direction` (upgrade or downgrade) to `revision`, in one transaction
    named `name`, on the store's own connection."""

    def run(connection: Connection) -> None:
        from alembic import command

        db.engine.serialise_migrations(connection)
        config = alembic_config()
        config.attributes["connection"] = connection
        getattr(command, direction)(config, revision)

    async with db.transaction(name) as connection:
        await connection.run_sync(run)


async def ensure_schema(db: Database) -> None:
    """Upgrade only when behind: the common case costs one small read."""
    if await current_revision(db) != head_revision():
        await upgrade(db)


@dataclasses.dataclass(frozen=True, slots=True)
class Revision:
    """One migration: its id, the one before it, and the first paragraph of its description."""

    revision: str
    down_revision: str | None
    title: str


def history() -> list[Revision]:
    """Every migration this version carries, oldest first."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    found = [
        Revision(
            revision=str(script.revision),
            down_revision=None if script.down_revision is None else str(script.down_revision),
            title=" ".join((script.doc or "").strip().split("\n\n")[0].split()),
        )
        for script in scripts.walk_revisions()
    ]
    return list(reversed(found))


async def downgrade(db: Database, revision: str) -> None:
    """Migrate back to `revision` ("base": no schema at all), undoing the newer ones."""
    await _migrate(db, "migrate_down", "downgrade", revision)
