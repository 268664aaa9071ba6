"""What the dialects may call: the core's entry points, and nothing of how they are built.

The dialects are typed against this, not against `Services` (which also holds the store,
the workers and the metrics), so a dialect reaches the store only through the core.
`Services` provides every attribute here.
"""

from __future__ import annotations

from typing import Protocol

from smsinbox.core.addressbook import Contacts, Devices
from smsinbox.core.bruteforce import LoginGuard
from smsinbox.core.credentials import Credentials
from smsinbox.core.inbox import Inbox
from smsinbox.core.ingest import Ingestor
from smsinbox.core.mailbox import Mailbox
from smsinbox.core.sessions import Sessions
from smsinbox.core.submission import SendApi
from smsinbox.core.sync import Sync


class Core(Protocol):
    inbox: Inbox
    mailbox: Mailbox
    sessions: Sessions
    send_api: SendApi
    sync: Sync
    contacts: Contacts
    devices: Devices
    ingestor: Ingestor
    upstreams: Credentials
    login_guard: LoginGuard
