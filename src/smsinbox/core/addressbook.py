"""Contacts and devices of a signed-in user."""

from __future__ import annotations

from collections.abc import Sequence

from smsinbox.core.clock import Clock, now_ms
from smsinbox.core.numbers import normalize_sender
from smsinbox.core.sessions import Principal
from smsinbox.errors import InvalidInput, MissingParameter, NotFound
from smsinbox.models import Contact, Device
from smsinbox.store import Store

MAX_NAME = 255
MAX_DEVICE_NAME = 128


def _name(name: str | None, field: str = "name") -> str:
    if name is None or not name.strip():
        raise MissingParameter(field)
    if len(name) > MAX_NAME or not name.isprintable():
        raise InvalidInput(f"{field} must be at most {MAX_NAME} printable characters", field)
    return name.strip()


def _numbers(who: Principal, msisdns: Sequence[str]) -> list[str]:
    """A contact's numbers as stored, read in the user's region (or sender ids)."""
    return [normalize_sender(number, "msisdns", region=who.region) for number in msisdns]


class Contacts:
    def __init__(self, store: Store, clock: Clock = now_ms) -> None:
        self.store = store
        self.clock = clock

    async def list(self, who: Principal) -> list[Contact]:
        return await self.store.list_contacts(who.account_id)

    async def create(self, who: Principal, name: str | None, msisdns: Sequence[str]) -> Contact:
        numbers = _numbers(who, msisdns)
        return await self.store.create_contact(
            who.account_id, _name(name), numbers, now=self.clock()
        )

    async def update(
        self,
        who: Principal,
        contact_id: int | None,
        *,
        name: str | None,
        msisdns: Sequence[str] | None,
    ) -> Contact:
        if contact_id is None:
            raise MissingParameter("contact_id")
        updated = await self.store.update_contact(
            who.account_id,
            contact_id,
            name=None if name is None else _name(name),
            msisdns=None if msisdns is None else _numbers(who, msisdns),
            now=self.clock(),
        )
        if updated is None:
            raise NotFound("no such contact")
        return updated

    async def delete(self, who: Principal, contact_id: int | None) -> None:
        if contact_id is None:
            raise MissingParameter("contact_id")
        if not await self.store.delete_contact(who.account_id, contact_id):
            raise NotFound("no such contact")


class Devices:
    def __init__(self, store: Store, clock: Clock = now_ms) -> None:
        self.store = store
        self.clock = clock

    async def register(self, who: Principal, name: str | None) -> Device:
        device_name = _name(name)
        if len(device_name) > MAX_DEVICE_NAME:
            raise InvalidInput(f"name must be at most {MAX_DEVICE_NAME} characters", "name")
        return await self.store.register_device(who.account_id, device_name, now=self.clock())

    async def list(self, who: Principal) -> list[Device]:
        return await self.store.list_devices(who.account_id)
