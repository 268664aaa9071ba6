"""Every example in docs/mysms.md runs, in order, against a real server and answers as shown.

An example is a fenced ``http`` block: the request line (``POST /json/...``), optional
headers, the body, a line holding only ``→``, and the answer. ``API_KEY`` and
``AUTH_TOKEN`` in a request stand for the key and the latest token a login answered with.
In an answer, ``…`` stands for any value and a string ending in ``…`` for any string that
starts the same way.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as safe_xml
import httpx

from smsinbox.dialects import mysms
from smsinbox.services import Services
from tests.conftest import LiveServer
from tests.mysms_docs_data import load_mailbox

PAGE = Path(__file__).resolve().parent.parent / "docs" / "mysms.md"
ANY = "…"
HEADER = re.compile(r"([A-Za-z-]+): (.+)")
XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'


@dataclasses.dataclass(frozen=True)
class Example:
    path: str
    headers: dict[str, str]
    body: str
    answer: str


def examples() -> list[Example]:
    found = []
    for block in re.findall(r"^```http\n(.*?)^```", PAGE.read_text(), re.S | re.M):
        request, arrow, answer = block.partition("\n→\n")
        assert arrow, f"no → line in:\n{block}"
        request_line, *lines = request.split("\n")
        method, path = request_line.split(" ", 1)
        assert method == "POST", request_line
        headers = {}
        while lines and (header := HEADER.fullmatch(lines[0])):
            headers[header[1]] = header[2]
            lines.pop(0)
        found.append(Example(path, headers, "\n".join(lines).strip(), answer.strip()))
    return found


def matches(expected: Any, actual: Any) -> bool:
    if expected == ANY:
        return True
    if isinstance(expected, str) and expected.endswith(ANY):
        return isinstance(actual, str) and actual.startswith(expected[: -len(ANY)])
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and list(expected) == list(actual)
            and all(matches(expected[key], actual[key]) for key in expected)
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return type(expected) is type(actual) and expected == actual


def expected_json(answer: str) -> Any:
    # A bare … is not JSON: quote it.
    return json.loads(re.sub(rf'(?<!["\w]){ANY}(?!")', f'"{ANY}"', answer))


def xml_matches(expected: Element, actual: Element) -> bool:
    return (
        expected.tag == actual.tag
        and matches((expected.text or "").strip(), (actual.text or "").strip())
        and len(expected) == len(actual)
        and all(xml_matches(e, a) for e, a in zip(expected, actual, strict=True))
    )


def auth_token(content: bytes, xml: bool) -> str | None:
    if xml:
        return safe_xml.fromstring(content).findtext("authToken")
    token = json.loads(content).get("authToken")
    return None if token is None else str(token)


async def test_every_example_answers_as_documented(
    services: Services, live_server: LiveServer
) -> None:
    api_key = await load_mailbox(services)
    cases = examples()
    documented = {case.path.split("/", 2)[2] for case in cases}
    assert {spec.path.lstrip("/") for spec in mysms.RESOURCES} <= documented
    assert any(case.answer.startswith("<") for case in cases)
    token = ""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        for number, case in enumerate(cases, 1):
            body = case.body.replace("API_KEY", api_key).replace("AUTH_TOKEN", token)
            response = await http.post(case.path, content=body.encode(), headers=case.headers)
            where = f"example {number}: {case.path}\n{case.body}\nanswered:\n{response.text}"
            assert response.status_code == 200, where
            xml = case.answer.startswith("<")
            media = "application/xml" if xml else "application/json"
            assert response.headers["content-type"] == media, where
            if xml:
                assert response.content.startswith(XML_DECLARATION), where
                expected = safe_xml.fromstring(case.answer.encode())
                assert xml_matches(expected, safe_xml.fromstring(response.content)), where
            else:
                assert matches(expected_json(case.answer), response.json()), where
            token = auth_token(response.content, xml) or token
