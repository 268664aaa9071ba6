"""SMSC binds, and the parts of long messages received over them.

A part is kept (committed) before its deliver_sm is answered, so a restart loses none; the
parts of one message are told apart from another's by the bind, sender, recipient,
reference and part count. Once the message is stored the parts are marked assembled and
kept a while, so a part the SMSC delivers again (its answer lost with a connection) is
recognised and not taken for the start of a new message.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import ColumnElement, and_, delete, exc, insert, select, update

from smsinbox.errors import AlreadyExists, NotFound
from smsinbox.models import SmppBind, SmppPart
from smsinbox.store import tables as t
from smsinbox.store.base import StoreBase

PartKey = tuple[int, str, str, int, int]  # bind id, source, destination, reference, total

_KEPT = ("id", "upstream_id", "created_at", "state", "last_error", "state_at")
# What the operator sets; the rest is the store's.
_ALL = [field.name for field in dataclasses.fields(SmppBind)]
_SETTINGS = [name for name in _ALL if name not in _KEPT]


def _bind(row: object) -> SmppBind:
    return SmppBind(**{name: getattr(row, name) for name in _ALL})


def _key_matches(key: PartKey) -> ColumnElement[bool]:
    bind_id, source, destination, reference, total = key
    parts = t.smpp_parts.c
    return and_(
        parts.bind_id == bind_id,
        parts.source == source,
        parts.destination == destination,
        parts.reference == reference,
        parts.total == total,
    )


class SmppStore(StoreBase):
    async def add_smpp_bind(self, bind: SmppBind, *, token_hash: str, now: int) -> SmppBind:
        """Keep a new bind, with the upstream its messages arrive from (`smpp:<name>`)."""
        try:
            async with self.db.transaction("add_smpp_bind") as connection:
                upstream_id = await connection.scalar(
                    insert(t.upstreams)
                    .values(name=f"smpp:{bind.name}", token_hash=token_hash, created_at=now)
                    .returning(t.upstreams.c.id)
                )
                values = {name: getattr(bind, name) for name in _SETTINGS}
                bind_id = await connection.scalar(
                    insert(t.smpp_binds)
                    .values(**values, upstream_id=upstream_id, created_at=now,
                            state="stopped", last_error="")
                    .returning(t.smpp_binds.c.id)
                )  # fmt: skip
        except exc.IntegrityError:
            raise AlreadyExists(f"an SMPP bind or upstream named {bind.name!r} exists") from None
        return dataclasses.replace(
            bind, id=int(bind_id or 0), upstream_id=int(upstream_id or 0), created_at=now
        )

    async def list_smpp_binds(self) -> list[SmppBind]:
        async with self.db.snapshot("list_smpp_binds") as connection:
            rows = await connection.execute(select(t.smpp_binds).order_by(t.smpp_binds.c.id))
            return [_bind(row) for row in rows.all()]

    async def get_smpp_bind(self, name: str) -> SmppBind:
        async with self.db.snapshot("get_smpp_bind") as connection:
            row = (
                await connection.execute(select(t.smpp_binds).where(t.smpp_binds.c.name == name))
            ).first()
        if row is None:
            raise NotFound(f"no SMPP bind named {name!r}")
        return _bind(row)

    async def record_smpp_bind_state(
        self, bind_id: int, state: str, last_error: str, *, now: int
    ) -> None:
        async with self.db.transaction("record_smpp_bind_state") as connection:
            await connection.execute(
                update(t.smpp_binds)
                .where(t.smpp_binds.c.id == bind_id)
                .values(state=state, last_error=last_error[:255], state_at=now)
            )

    async def set_smpp_bind_routes(self, name: str, routes: str) -> None:
        async with self.db.transaction("set_smpp_bind_routes") as connection:
            changed = await connection.execute(
                update(t.smpp_binds).where(t.smpp_binds.c.name == name).values(routes=routes)
            )
        if changed.rowcount == 0:
            raise NotFound(f"no SMPP bind named {name!r}")

    async def set_smpp_bind_enabled(self, name: str, enabled: bool) -> None:
        async with self.db.transaction("set_smpp_bind_enabled") as connection:
            changed = await connection.execute(
                update(t.smpp_binds).where(t.smpp_binds.c.name == name).values(enabled=enabled)
            )
        if changed.rowcount == 0:
            raise NotFound(f"no SMPP bind named {name!r}")

    async def remove_smpp_bind(self, name: str, *, now: int) -> None:
        """Forget a bind and the parts it holds; its upstream stays (its messages name it),
        revoked."""
        async with self.db.transaction("remove_smpp_bind") as connection:
            upstream_id = await connection.scalar(
                delete(t.smpp_binds)
                .where(t.smpp_binds.c.name == name)
                .returning(t.smpp_binds.c.upstream_id)
            )
            if upstream_id is None:
                raise NotFound(f"no SMPP bind named {name!r}")
            await connection.execute(
                update(t.upstreams).where(t.upstreams.c.id == upstream_id).values(revoked_at=now)
            )

    async def keep_smpp_part(self, key: PartKey, part: SmppPart) -> bool:
        """Keep a part; a copy of a part kept already changes nothing. Whether its message
        was assembled already (then the part is one delivered again, and not kept).

        A part for a stored message that differs from the one kept is the first of a new
        message that reuses the reference (a sender's references wrap at 256): the old
        message's parts make way for it.

        Whether the message is whole is read afterwards (`smpp_message_parts`), in a
        snapshot taken after this commit: two parts kept at once on PostgreSQL do not see
        each other inside their transactions, but the later one's reader sees both."""
        bind_id, source, destination, reference, total = key
        parts = t.smpp_parts.c
        try:
            async with self.db.transaction("keep_smpp_part") as connection:
                kept = (
                    await connection.execute(
                        select(parts.sequence, parts.units, parts.assembled_at).where(
                            _key_matches(key)
                        )
                    )
                ).all()
                if any(row.assembled_at is not None for row in kept):
                    if any(
                        (row.sequence, row.units) == (part.sequence, part.units) for row in kept
                    ):
                        return True
                    await connection.execute(delete(t.smpp_parts).where(_key_matches(key)))
                    kept = []
                if all(row.sequence != part.sequence for row in kept):
                    await connection.execute(
                        insert(t.smpp_parts).values(
                            bind_id=bind_id, source=source, destination=destination,
                            reference=reference, total=total, sequence=part.sequence,
                            alphabet=part.alphabet, units=part.units,
                            received_at=part.received_at,
                        )
                    )  # fmt: skip
        except exc.IntegrityError:
            pass  # the same part, kept at the same moment by another delivery of it
        return False

    async def smpp_message_parts(self, key: PartKey) -> list[SmppPart]:
        """The parts of a long message kept so far, in part order."""
        parts = t.smpp_parts.c
        async with self.db.snapshot("smpp_message_parts") as connection:
            rows = (
                await connection.execute(
                    select(parts.sequence, parts.alphabet, parts.units, parts.received_at)
                    .where(_key_matches(key))
                    .order_by(parts.sequence)
                )
            ).all()
        return [SmppPart(*row) for row in rows]

    async def mark_smpp_parts_assembled(self, key: PartKey, *, now: int) -> None:
        async with self.db.transaction("mark_smpp_parts_assembled") as connection:
            await connection.execute(
                update(t.smpp_parts).where(_key_matches(key)).values(assembled_at=now)
            )

    async def waiting_smpp_messages(self, *, received_before: int) -> list[PartKey]:
        """The long messages whose first part came before `received_before` and that are
        still not whole."""
        parts = t.smpp_parts.c
        async with self.db.snapshot("waiting_smpp_messages") as connection:
            rows = (
                await connection.execute(
                    select(parts.bind_id, parts.source, parts.destination, parts.reference,
                           parts.total)
                    .where(parts.assembled_at.is_(None), parts.received_at < received_before)
                    .distinct()
                )
            ).all()  # fmt: skip
        return [(row[0], row[1], row[2], row[3], row[4]) for row in rows]

    async def purge_smpp_parts(self, *, assembled_before: int) -> int:
        """Forget parts of messages stored before `assembled_before`: how many."""
        async with self.db.transaction("purge_smpp_parts") as connection:
            purged = await connection.execute(
                delete(t.smpp_parts).where(t.smpp_parts.c.assembled_at < assembled_before)
            )
        return int(purged.rowcount or 0)
