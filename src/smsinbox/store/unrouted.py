"""The unrouted box: incoming messages for numbers no account owns, kept until an operator
gives the number to an account, when they move there through the ingest path."""

from __future__ import annotations

from sqlalchemy import delete, func, select

from smsinbox.errors import AlreadyExists
from smsinbox.models import Encoding, InboundMessage, UnroutedMessage
from smsinbox.store import tables as t
from smsinbox.store.base import NUMBER_OWNER, StoreBase, account_id_for, claim_number
from smsinbox.store.ingest import Arrival, store_batch


class UnroutedStore(StoreBase):
    async def list_unrouted(self, limit: int = 1000) -> list[UnroutedMessage]:
        async with self.db.snapshot("list_unrouted") as connection:
            rows = (
                await connection.execute(select(t.unrouted).order_by(t.unrouted.c.id).limit(limit))
            ).all()
        return [
            UnroutedMessage(
                id=row.id,
                sender=row.sender,
                recipient=row.recipient,
                text=row.text,
                encoding=Encoding(row.encoding),
                received_at=row.received_at,
            )
            for row in rows
        ]

    async def assign_unrouted(
        self, msisdn: str, username: str, *, now: int, reply_window_ms: int
    ) -> int:
        """Give `msisdn` to the account and move the messages waiting for it there.

        The moved messages get a receive time of now (the account's cursors have moved on
        since they first arrived); the sender's own time is kept. Returns how many moved.
        """
        async with self.db.transaction("assign_unrouted") as connection:
            account_id = await account_id_for(connection, username)
            owner = await connection.scalar(NUMBER_OWNER, {"msisdn": msisdn})
            if owner is None:
                await claim_number(connection, msisdn, account_id, now)
            elif owner != account_id:
                raise AlreadyExists(f"number {msisdn} already belongs to another account")
            waiting = (
                await connection.execute(
                    select(t.unrouted)
                    .where(t.unrouted.c.recipient == msisdn)
                    .order_by(t.unrouted.c.id)
                )
            ).all()
            # Free the upstream ids first: the moved rows take them over.
            await connection.execute(delete(t.unrouted).where(t.unrouted.c.recipient == msisdn))
            arrivals = [
                Arrival(
                    InboundMessage(
                        sender=row.sender,
                        recipient=row.recipient,
                        text=row.text,
                        encoding=Encoding(row.encoding),
                        body=row.body,
                        upstream_id=row.upstream_id,
                        upstream_message_id=row.upstream_message_id,
                        reply_ref=row.reply_ref,
                        sent_at=row.sent_at,
                    ),
                    now,
                    reply_window_ms,
                )
                for row in waiting
            ]
            # The same path as any incoming message: the number routes to its new owner now.
            _, queued = await store_batch(await self.db.engine.driver(connection), arrivals)
            if queued:
                await self.db.engine.notify(connection, t.NOTIFY_CHANNEL)
        self.outbox_changed()
        return len(waiting)

    async def count_unrouted(self) -> int:
        async with self.db.snapshot("count_unrouted") as connection:
            count = await connection.scalar(select(func.count()).select_from(t.unrouted))
        return int(count or 0)
