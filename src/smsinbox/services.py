"""Everything a process needs, built from settings: the app and the CLI share it."""

from __future__ import annotations

import dataclasses
import logging

from smsinbox.config import Settings
from smsinbox.core.accounts import Accounts
from smsinbox.core.auth import PasswordAuthenticator
from smsinbox.core.credentials import Credentials
from smsinbox.core.inbox import Inbox
from smsinbox.core.ingest import Ingestor
from smsinbox.core.retention import Retention
from smsinbox.errors import SchemaBehind, StoreUnavailable
from smsinbox.metrics import Metrics
from smsinbox.store import Database, Store
from smsinbox.store.migrate import current_revision, ensure_schema, head_revision

log = logging.getLogger("smsinbox")


@dataclasses.dataclass
class Services:
    settings: Settings
    metrics: Metrics
    store: Store
    accounts: Accounts
    ingestor: Ingestor
    upstreams: Credentials
    api_keys: Credentials
    inbox: Inbox
    retention: Retention

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
            inbox=Inbox(
                store,
                PasswordAuthenticator(store, cache_ttl=settings.auth_cache_ttl),
                id_page_size=settings.eapi_page_size,
            ),
            retention=Retention(
                store,
                max_messages=settings.retention_max_messages,
                max_age_days=settings.retention_max_age_days,
                interval_s=settings.retention_interval,
                on_pruned=metrics.count_pruned,
            ),
        )

    async def start(self) -> None:
        """Make sure the schema is current: migrate it, or refuse to run on an old one."""
        if self.settings.migrate_on_start:
            await ensure_schema(self.store.db)
            return
        try:
            current = await current_revision(self.store.db)
        except StoreUnavailable:
            # Start anyway: /readyz reports the outage and requests get "unavailable"
            # answers until the database is back, with no restart needed.
            log.warning("database unavailable at start; schema not checked")
            return
        head = head_revision()
        if current != head:
            raise SchemaBehind(
                f"the database schema is at revision {current or 'none'}, this version "
                f"needs {head}: run `smsinbox db upgrade`"
            )

    async def close(self) -> None:
        await self.store.close()
