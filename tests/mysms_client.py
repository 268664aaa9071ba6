"""A small mysms client for tests: JSON under /json, JSON or XML under /rest."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

import defusedxml.ElementTree as safe_xml
import httpx


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
