"""Everything a process needs, built from settings: the app and the CLI share it."""

from __future__ import annotations

import dataclasses

from smsinbox.config import Settings
from smsinbox.core.accounts import Accounts
from smsinbox.core.credentials import Credentials
from smsinbox.core.ingest import Ingestor
from smsinbox.metrics import Metrics
from smsinbox.store import Database, Store
from smsinbox.store.migrate import ensure_schema


@dataclasses.dataclass
class Services:
    settings: Settings
    metrics: Metrics
    store: Store
    accounts: Accounts
    ingestor: Ingestor
    upstreams: Credentials
    api_keys: Credentials

    @classmethod
    def build(cls, settings: Settings) -> Services:
        metrics = Metrics()
        database = Database(
            settings.database_url,
            pool_size=settings.db_pool_size,
            timeout=settings.db_timeout,
            observer=metrics.observe_transaction,
        )
        store = Store(database)
        return cls(
            settings=settings,
            metrics=metrics,
            store=store,
            accounts=Accounts(store, default_time_zone=settings.default_time_zone),
            ingestor=Ingestor(
                store,
                reply_window_s=settings.reply_window,
                max_chars=settings.max_message_chars,
                on_outcome=metrics.count_ingest,
            ),
            upstreams=Credentials(store, "upstream"),
            api_keys=Credentials(store, "api_key"),
        )

    async def start(self) -> None:
        if self.settings.migrate_on_start:
            await ensure_schema(self.store.db)

    async def close(self) -> None:
        await self.store.close()
