"""The `smsinbox` command: run the server and administer accounts, numbers and secrets.

`base` holds the command tree and what every command shares; each other module adds the
commands of one subject to it.
"""

from __future__ import annotations

from smsinbox.cli import accounts, db, messages, push, server, smpp, transfer
from smsinbox.cli.base import app

__all__ = ["accounts", "app", "db", "main", "messages", "push", "server", "smpp", "transfer"]


def main() -> None:
    # One name however it is started (`smsinbox`, `python -m smsinbox`): the usage lines and
    # shell completion's _SMSINBOX_COMPLETE variable are derived from it.
    app(prog_name="smsinbox")
