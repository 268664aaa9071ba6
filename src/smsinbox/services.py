"""Everything a process needs, built from settings: the app and the CLI share it."""

from __future__ import annotations

import dataclasses
import logging

from smsinbox.config import Settings
from smsinbox.core.accounts import Accounts
from smsinbox.core.addressbook import Contacts, Devices
from smsinbox.core.auth import PasswordAuthenticator
from smsinbox.core.bruteforce import LoginGuard
from smsinbox.core.credentials import Credentials
from smsinbox.core.dispatch import Dispatcher
from smsinbox.core.inbox import Inbox
from smsinbox.core.ingest import Ingestor
from smsinbox.core.live import LiveMailboxes
from smsinbox.core.mailbox import Mailbox
from smsinbox.core.push import PushEndpoints
from smsinbox.core.ratelimit import MovingWindows, RateLimits
from smsinbox.core.retention import Retention
from smsinbox.core.sessions import Sessions
from smsinbox.core.submission import SendApi
from smsinbox.core.sync import Sync
from smsinbox.core.turns import ReadTurns
from smsinbox.core.websessions import WebSessions
from smsinbox.errors import SchemaBehind, StoreMissing, StoreUnavailable
from smsinbox.metrics import Metrics
from smsinbox.push.addresses import AddressPolicy
from smsinbox.push.worker import PushWorker
from smsinbox.store import Database, Store
from smsinbox.store.migrate import current_revision, head_revision, upgrade
from smsinbox.upstream.smpp import SmppBinds, SmppInbound

log = logging.getLogger("smsinbox")

# How often a process looks for changes its live pages were not told of (another process's
# sends and reads; on SQLite, anything another process wrote).
LIVE_POLL_S = 1.0


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
    sessions: Sessions
    mailbox: Mailbox
    send_api: SendApi
    dispatcher: Dispatcher
    contacts: Contacts
    devices: Devices
    sync: Sync
    push: PushEndpoints
    push_worker: PushWorker
    login_guard: LoginGuard
    web_sessions: WebSessions
    live: LiveMailboxes
    smpp: SmppBinds

    @classmethod
    def build(cls, settings: Settings, *, create_store: bool = True) -> Services:
        """Everything the server and the commands use, built from `settings`.

        `create_store` False: a SQLite file that does not exist is StoreMissing rather than a
        new store (see `start`'s `existing_only`)."""
        metrics = Metrics()
        database = Database(
            settings.database_url,
            pool_size=settings.db_pool_size,
            timeout=settings.db_timeout,
            observer=metrics.observe_transaction,
            create=create_store,
        )
        metrics.describe_build(database.kind)
        store = Store(database)
        windows = MovingWindows(settings.rate_limit_storage)
        login_guard = LoginGuard(
            windows,
            per_account=settings.login_failures_per_account,
            per_address=settings.login_failures_per_address,
            window_s=settings.login_failure_window,
            delay_s=settings.login_failure_delay,
            max_delay_s=settings.login_failure_max_delay,
            on_failure=metrics.count_login_failure,
            on_lockout=metrics.count_login_lockout,
            on_delay=metrics.observe_login_delay,
        )
        authenticator = PasswordAuthenticator(store, login_guard, cache_ttl=settings.auth_cache_ttl)
        ingestor = Ingestor(
            store,
            reply_window_s=settings.reply_window,
            max_chars=settings.max_message_chars,
            default_region=settings.default_region,
            on_outcome=metrics.count_ingest,
        )
        remembered = settings.credential_cache_ttl
        api_keys = Credentials(store, "api_key", remember_s=remembered)
        turns = ReadTurns(settings.bulk_read_concurrency, writes_waiting=store.ingest_queue.busy)
        mailbox = Mailbox(
            store,
            ingestor,
            max_chars=settings.max_message_chars,
            turns=turns,
            send_expiry_s=settings.send_expiry,
        )
        addresses = AddressPolicy(allow_private=settings.push_allow_private)
        return cls(
            settings=settings,
            metrics=metrics,
            store=store,
            accounts=Accounts(
                store,
                default_time_zone=settings.default_time_zone,
                default_region=settings.default_region,
            ),
            ingestor=ingestor,
            upstreams=Credentials(store, "upstream", remember_s=remembered),
            api_keys=api_keys,
            inbox=Inbox(store, authenticator, id_page_size=settings.eapi_page_size, turns=turns),
            retention=Retention(
                store,
                max_messages=settings.retention_max_messages,
                max_age_days=settings.retention_max_age_days,
                interval_s=settings.retention_interval,
                tombstone_days=settings.sync_tombstone_days,
                on_pruned=metrics.count_pruned,
            ),
            sessions=Sessions(
                store,
                api_keys,
                authenticator,
                RateLimits(
                    per_account=settings.rate_limit_per_account,
                    per_api_key=settings.rate_limit_per_api_key,
                    windows=windows,
                ),
                login_guard,
                token_ttl_s=settings.auth_token_ttl,
                default_region=settings.default_region,
            ),
            mailbox=mailbox,
            send_api=SendApi(store, authenticator, mailbox, default_region=settings.default_region),
            dispatcher=Dispatcher(store, mailbox),
            contacts=Contacts(store),
            devices=Devices(store),
            sync=Sync(store, mailbox),
            push=PushEndpoints(store, addresses),
            push_worker=PushWorker(
                store,
                metrics,
                schedule_s=settings.retry_schedule(),
                jitter=settings.push_retry_jitter,
                timeout_s=settings.push_timeout,
                concurrency=settings.push_concurrency,
                endpoint_concurrency=settings.push_endpoint_concurrency,
                disable_after_s=settings.push_disable_after_days * 86400,
                addresses=addresses,
            ),
            login_guard=login_guard,
            web_sessions=WebSessions(
                store,
                authenticator,
                login_guard,
                admin_token=settings.admin_token,
                ttl_s=settings.web_session_ttl,
                default_time_zone=settings.default_time_zone,
                default_region=settings.default_region,
            ),
            live=LiveMailboxes(store, poll_s=LIVE_POLL_S),
            smpp=SmppBinds(
                store,
                SmppInbound(store, ingestor, reassembly_timeout_s=settings.smpp_reassembly_timeout),
                metrics,
                refresh_s=settings.smpp_refresh,
            ),
        )

    async def start(self, *, existing_only: bool = False) -> None:
        """Make sure the schema is current: migrate it, or refuse to run on an old one.

        `existing_only`: a database without smsinbox's schema is StoreMissing, not a store to
        create (the administrative commands work on a store; only `db upgrade` and `serve`
        make one)."""
        db = self.store.db
        try:
            current = await current_revision(db)
        except StoreUnavailable:
            if existing_only or self.settings.migrate_on_start:
                raise
            # Start anyway: /readyz reports the outage and requests get "unavailable"
            # answers until the database is back, with no restart needed.
            log.warning("database unavailable at start; schema not checked")
            return
        head = head_revision()
        if current is None and existing_only:
            raise StoreMissing(
                f"no smsinbox schema in {db.where}: `smsinbox db upgrade` creates it"
            )
        if current == head:
            return
        if not self.settings.migrate_on_start:
            raise SchemaBehind(
                f"the database schema is at revision {current or 'none'}, this version "
                f"needs {head}: run `smsinbox db upgrade`"
            )
        await upgrade(db)
        # Said where the operator will see it: a store made in a directory nobody meant (a
        # relative SQLite path, run from elsewhere) is found by this line.
        if current is None:
            log.info("created the smsinbox schema %s in %s", head, db.where)
        else:
            log.info("migrated %s from schema %s to %s", db.where, current, head)

    async def close(self) -> None:
        await self.store.close()
