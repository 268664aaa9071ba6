"""The migrations build exactly the schema the code declares, on both engines."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from smsinbox.config import Settings
from smsinbox.errors import SchemaBehind
from smsinbox.services import Services
from smsinbox.store.migrate import (
    current_revision,
    ensure_schema,
    head_revision,
    include_object,
    upgrade,
)
from smsinbox.store.tables import metadata


async def test_migrated_schema_matches_the_tables(services: Services) -> None:
    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": include_object}
        )
        return list(compare_metadata(context, metadata))

    async with services.store.db.snapshot("test_compare_schema") as connection:
        assert await connection.run_sync(differences) == []


async def test_schema_is_at_head_and_upgrading_again_is_harmless(services: Services) -> None:
    assert await current_revision(services.store.db) == head_revision()
    await ensure_schema(services.store.db)
    assert await current_revision(services.store.db) == head_revision()


async def test_without_auto_migration_an_old_schema_is_refused_clearly(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'old.db'}", migrate_on_start=False)
    services = Services.build(settings)
    try:
        with pytest.raises(SchemaBehind, match="run `smsinbox db upgrade`"):
            await services.start()
        await upgrade(services.store.db)
        await services.start()
    finally:
        await services.close()


def test_the_head_revision_is_the_newest_migration() -> None:
    """HEAD_REVISION spares a server whose schema is current from loading Alembic."""
    from alembic.script import ScriptDirectory

    from smsinbox.store.migrate import alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == head_revision()
