"""An account's address book: names for the numbers it talks to."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import delete, insert, select, update

from smsinbox.models import Contact
from smsinbox.store import tables as t
from smsinbox.store.base import StoreBase
from smsinbox.store.database import Connection


class ContactStore(StoreBase):
    async def list_contacts(self, account_id: int) -> list[Contact]:
        contacts = t.contacts.c
        async with self.db.snapshot("list_contacts") as connection:
            rows = (
                await connection.execute(
                    select(contacts.id, contacts.name)
                    .where(contacts.account_id == account_id)
                    .order_by(contacts.id)
                )
            ).all()
            numbers = (
                await connection.execute(
                    select(t.contact_numbers.c.contact_id, t.contact_numbers.c.msisdn)
                    .join(t.contacts, t.contacts.c.id == t.contact_numbers.c.contact_id)
                    .where(contacts.account_id == account_id)
                    .order_by(t.contact_numbers.c.msisdn)
                )
            ).all()
        numbers_of: defaultdict[int, list[str]] = defaultdict(list)
        for contact_id, msisdn in numbers:
            numbers_of[contact_id].append(msisdn)
        return [Contact(row.id, row.name, tuple(numbers_of[row.id])) for row in rows]

    async def create_contact(
        self, account_id: int, name: str, msisdns: Sequence[str], *, now: int
    ) -> Contact:
        async with self.db.transaction("create_contact") as connection:
            contact_id = int(
                await connection.scalar(
                    insert(t.contacts)
                    .values(account_id=account_id, name=name, created_at=now, modified_at=now)
                    .returning(t.contacts.c.id)
                )
                or 0
            )
            await _set_numbers(connection, contact_id, msisdns)
        return Contact(contact_id, name, tuple(sorted(set(msisdns))))

    async def update_contact(
        self,
        account_id: int,
        contact_id: int,
        *,
        name: str | None,
        msisdns: Sequence[str] | None,
        now: int,
    ) -> Contact | None:
        """Rename or renumber a contact of the account; None if it is not the account's."""
        contacts = t.contacts.c
        async with self.db.transaction("update_contact") as connection:
            current = await connection.scalar(
                select(contacts.name)
                .where(contacts.account_id == account_id)
                .where(contacts.id == contact_id)
            )
            if current is None:
                return None
            await connection.execute(
                update(t.contacts)
                .where(contacts.id == contact_id)
                .values(name=name if name is not None else current, modified_at=now)
            )
            if msisdns is not None:
                await _set_numbers(connection, contact_id, msisdns)
        updated = [c for c in await self.list_contacts(account_id) if c.id == contact_id]
        return updated[0] if updated else None

    async def delete_contact(self, account_id: int, contact_id: int) -> bool:
        contacts = t.contacts.c
        async with self.db.transaction("delete_contact") as connection:
            result = await connection.execute(
                delete(t.contacts)
                .where(contacts.account_id == account_id)
                .where(contacts.id == contact_id)
            )
            return bool(result.rowcount)


async def _set_numbers(connection: Connection, contact_id: int, msisdns: Sequence[str]) -> None:
    await connection.execute(
        delete(t.contact_numbers).where(t.contact_numbers.c.contact_id == contact_id)
    )
    unique = sorted(set(msisdns))
    if unique:
        await connection.execute(
            insert(t.contact_numbers),
            [{"contact_id": contact_id, "msisdn": msisdn} for msisdn in unique],
        )
