"""The `smsinbox` command: run the server and administer accounts, numbers and secrets.

`base` holds the command tree and what every command shares; each other module adds the
commands of one subject to it.
"""

from __future__ import annotations

from smsinbox.cli import accounts, db, messages, push, server, smpp
from smsinbox.cli.base import app

__all__ = ["accounts", "app", "db", "main", "messages", "push", "server", "smpp"]


def main() -> None:
    app()
