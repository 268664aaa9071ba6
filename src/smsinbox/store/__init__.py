"""The store: one interface over SQLite and PostgreSQL.

Each method is a verb_noun coroutine that owns its transaction and names it; callers never
see a connection.
"""

from __future__ import annotations

from smsinbox.store.accounts import AccountStore
from smsinbox.store.contacts import ContactStore
from smsinbox.store.conversations import ConversationStore
from smsinbox.store.credentials import CredentialStore
from smsinbox.store.database import Database, TransactionObserver
from smsinbox.store.devices import DeviceStore
from smsinbox.store.inbox import InboxStore
from smsinbox.store.mailbox import MailboxStore
from smsinbox.store.messages import MessageStore
from smsinbox.store.outbound import OutboundStore
from smsinbox.store.outgoing import OutgoingStore
from smsinbox.store.push import PushStore
from smsinbox.store.retention import RetentionStore
from smsinbox.store.sessions import SessionStore
from smsinbox.store.smpp import SmppStore
from smsinbox.store.sync import SyncStore
from smsinbox.store.transfer import TransferStore
from smsinbox.store.unrouted import UnroutedStore
from smsinbox.store.websessions import WebSessionStore

__all__ = ["Database", "Store", "TransactionObserver"]


class Store(
    AccountStore,
    CredentialStore,
    MessageStore,
    OutgoingStore,
    OutboundStore,
    UnroutedStore,
    ConversationStore,
    InboxStore,
    RetentionStore,
    MailboxStore,
    SessionStore,
    DeviceStore,
    ContactStore,
    SyncStore,
    PushStore,
    SmppStore,
    WebSessionStore,
    TransferStore,
):
    """Every storage operation smsinbox has, over one Database."""

    async def close(self) -> None:
        await self.db.close()
