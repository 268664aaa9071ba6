"""The migrations build exactly the schema the code declares, on both engines."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from smsinbox.services import Services
from smsinbox.store.migrate import current_revision, ensure_schema, head_revision
from smsinbox.store.tables import metadata


async def test_migrated_schema_matches_the_tables(services: Services) -> None:
    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with services.store.db.snapshot("test_compare_schema") as connection:
        assert await connection.run_sync(differences) == []


async def test_schema_is_at_head_and_upgrading_again_is_harmless(services: Services) -> None:
    assert await current_revision(services.store.db) == head_revision()
    await ensure_schema(services.store.db)
    assert await current_revision(services.store.db) == head_revision()
