"""A small inbox with every kind of message, at fixed times, for golden tests and docs."""

from __future__ import annotations

from smsinbox.core import records
from smsinbox.core.ingest import RawInbound
from smsinbox.models import AccountStatus, MessageStatus
from smsinbox.services import Services

NUMBER = "447700900001"
PASSWORD = "secret"
T0 = 1295539600000  # 2011-01-20 16:06:40 UTC, winter: London is on UTC
SUMMER = 1310000000000  # 2011-07-07 00:53:20 UTC, 01:53:20 in London (BST)


async def _at(services: Services, when: int, raw: RawInbound) -> int:
    services.ingestor.clock = lambda: when
    return (await services.ingestor.accept(raw, upstream_id=None)).id


async def load_inbox(services: Services) -> None:
    """alice (Europe/London): one outgoing message (id 1) and incoming ids 2 to 5."""
    account = await services.accounts.add(
        "alice", PASSWORD, msisdns=(NUMBER,), time_zone="Europe/London"
    )
    sent = records.outgoing(
        NUMBER, "4412312345", "question?", status=MessageStatus.COMPLETE, now=T0 - 60_000
    )
    await services.store.add_message(account.id, sent, now=T0 - 60_000)
    await _at(services, T0, RawInbound("4412312345", NUMBER, text=b"Hi there"))
    await _at(
        services,
        T0 + 55_000,
        RawInbound("4412312346", NUMBER, hex="234f345a324b6b523a", encoding="8bit"),
    )
    await _at(
        services,
        T0 + 80_000,
        RawInbound(
            "4412312399",
            NUMBER,
            text="This is a Unicode message ☺".encode("utf-16-be"),
            coding="2",
            charset="UTF-16BE",
        ),
    )
    await _at(services, SUMMER, RawInbound("4412312345", NUMBER, text=b"two\nlines | pipe"))
    await services.accounts.add("blocked", PASSWORD)
    await services.accounts.block("blocked")
    await services.accounts.add("newbie", PASSWORD, status=AccountStatus.NEEDS_ACTIVATION)
