"""The mailbox docs/mysms.md starts from: two accounts, an API key and three incoming messages."""

from __future__ import annotations

from smsinbox.core.clock import Clock
from smsinbox.core.ingest import RawInbound
from smsinbox.services import Services

ALICE = "447700900001"
BOB = "447700900002"
PASSWORD = "secret"
T0 = 1700000000000  # 2023-11-14 22:13:20 UTC

# (milliseconds after T0, sender, text), received by alice in this order: ids 1, 2 and 3.
INCOMING = [
    (0, "447700900123", "Are we still meeting at noon?"),
    (60_000, "447700900123", "I'm at the café by the station."),
    (120_000, "447700900456", "Your parcel arrives tomorrow between 10:00 and 12:00."),
]


def fixed(at: int) -> Clock:
    return lambda: at


async def load_mailbox(services: Services) -> str:
    """Create what the page's examples assume; returns the API key's secret."""
    await services.accounts.add("alice", PASSWORD, msisdns=(ALICE,))
    await services.accounts.add("bob", PASSWORD, msisdns=(BOB,))
    _, api_key = await services.api_keys.create("my-app")
    for offset, sender, text in INCOMING:
        services.ingestor.clock = fixed(T0 + offset)
        raw = RawInbound(sender, ALICE, text=text.encode(), charset="UTF-8")
        await services.ingestor.accept(raw, upstream_id=None)
    return api_key
