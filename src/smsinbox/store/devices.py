"""Devices an account syncs messages with."""

from __future__ import annotations

from sqlalchemy import insert, select

from smsinbox.models import Device
from smsinbox.store import tables as t
from smsinbox.store.base import StoreBase


class DeviceStore(StoreBase):
    async def register_device(self, account_id: int, name: str, *, now: int) -> Device:
        async with self.db.transaction("register_device") as connection:
            device_id = await connection.scalar(
                insert(t.devices)
                .values(account_id=account_id, name=name, created_at=now)
                .returning(t.devices.c.id)
            )
        return Device(id=int(device_id or 0), name=name, created_at=now, last_sync_at=None)

    async def list_devices(self, account_id: int) -> list[Device]:
        devices = t.devices.c
        async with self.db.snapshot("list_devices") as connection:
            rows = (
                await connection.execute(
                    select(t.devices).where(devices.account_id == account_id).order_by(devices.id)
                )
            ).all()
        return [
            Device(id=r.id, name=r.name, created_at=r.created_at, last_sync_at=r.last_sync_at)
            for r in rows
        ]

    async def device_exists(self, account_id: int, device_id: int) -> bool:
        # Driver level: a device's syncs and inserts each ask first.
        found = await self.db.read_row("device_exists", _DEVICE_OF, (account_id, device_id))
        return found is not None


_DEVICE_OF = "SELECT id FROM devices WHERE account_id = ? AND id = ?"
