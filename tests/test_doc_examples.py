"""Every curl example in the API docs runs against a real server and prints what it shows."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from smsinbox.services import Services
from tests.conftest import LiveServer
from tests.polling_data import load_inbox

DOCS = Path(__file__).resolve().parent.parent / "docs"
DOCUMENTED_URL = "http://127.0.0.1:8080"


def examples(page: str) -> list[tuple[str, str]]:
    """(command, expected output) for each `$ curl` line of the page's console blocks."""
    found = []
    for block in re.findall(r"```console\n(.*?)```", (DOCS / page).read_text(), re.S):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, output = chunk.partition("\n")
            if command.startswith("curl "):
                found.append((command, output))
    return found


@pytest.mark.parametrize("page", ["mc5.md", "eapi.md"])
async def test_documented_examples_print_what_the_docs_show(
    page: str, services: Services, live_server: LiveServer
) -> None:
    await load_inbox(services)
    cases = examples(page)
    assert len(cases) >= 4
    for command, expected in cases:
        result = subprocess.run(
            ["bash", "-c", command.replace(DOCUMENTED_URL, live_server.url)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.rstrip("\n") == expected.rstrip("\n"), command
