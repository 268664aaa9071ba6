"""A small mysms client for tests: JSON under /json, JSON or XML under /rest; and a
device's copy of an account's messages, kept by the sync procedure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from xml.etree import ElementTree

import defusedxml.ElementTree as safe_xml
import httpx

from smsinbox.services import Services

# A message as a device holds it: (address, text, read, locked).
Held = tuple[str, str, bool, bool]


class Mysms:
    def __init__(self, http: httpx.AsyncClient, api_key: str) -> None:
        self.http = http
        self.api_key = api_key
        self.token: str | None = None

    async def login(self, msisdn: int, password: str) -> dict[str, Any]:
        answer = await self.call("/user/login", msisdn=msisdn, password=password, session=False)
        self.token = answer.get("authToken")
        return answer

    async def call(self, path: str, *, session: bool = True, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"apiKey": self.api_key, **fields}
        if session:
            body["authToken"] = self.token
        response = await self.http.post("/json" + path, json=body)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        answer: dict[str, Any] = response.json()
        return answer

    async def call_xml(self, path: str, element: str, **fields: Any) -> ElementTree.Element:
        root = ElementTree.Element(element)
        for name, value in {"apiKey": self.api_key, "authToken": self.token, **fields}.items():
            for item in value if isinstance(value, list) else [value]:
                child = ElementTree.SubElement(root, name)
                if isinstance(item, dict):
                    for key, inner in item.items():
                        ElementTree.SubElement(child, key).text = _text(inner)
                else:
                    child.text = _text(item)
        response = await self.http.post(
            "/rest" + path,
            content=ElementTree.tostring(root),
            headers={"Content-Type": "application/xml", "Accept": "application/xml"},
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/xml"
        return safe_xml.fromstring(response.content)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class DeviceCopy:
    """A mysms device's copy of the account's messages, kept by the sync procedure."""

    def __init__(self, device_id: int) -> None:
        self.device_id = device_id
        self.state = 0
        self.messages: dict[int, Held] = {}

    async def catch_up(
        self,
        client: Mysms,
        *,
        syncs: Sequence[dict[str, Any]] = (),
        limit: int,
        initial: bool = False,
    ) -> list[dict[str, Any]]:
        """Send the device's own changes (`syncs`), then sync to the end, `limit` changes a
        request; the changes received."""
        received: list[dict[str, Any]] = []
        while True:
            answer = await client.call(
                "/user/message/sync",
                deviceId=self.device_id,
                syncs=list(syncs),
                syncAcks=[self.state],
                syncLimit=limit,
                syncInitial=initial,
            )
            assert answer["errorCode"] == 0 and not answer["syncResync"], answer
            syncs = ()  # an initial listing goes on in initial mode until it is complete
            for change in answer["syncs"]:
                if change["operation"] == 2:
                    self.messages.pop(change["messageId"], None)
                else:
                    self.messages[change["messageId"]] = (
                        change["address"], change["message"], change["read"], change["locked"]
                    )  # fmt: skip
            received += answer["syncs"]
            self.state = answer["syncState"]
            if not answer["syncMore"]:
                return received


async def held_by_server(services: Services, username: str) -> dict[int, Held]:
    """The account's messages as a device that has synced to the end holds them."""
    return {
        m.id: (m.counterpart, m.text, m.read, m.locked)
        for m in await services.store.list_recent_messages(username, 1000)
    }
