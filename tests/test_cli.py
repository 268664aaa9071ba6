"""The `smsinbox` command as an operator runs it: `smsinbox` here runs a real process (the
async tests of other modules use it), `command` the same in this process, for the long
sessions of commands below."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from smsinbox.cli import app
from tests.commands import Ran
from tests.commands import smsinbox as command


def smsinbox(
    database_url: str, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SMSINBOX_DATABASE_URL": database_url}
    env.pop("SMSINBOX_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "smsinbox", *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str] | Ran) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str] | Ran, message: str) -> None:
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_operator_session(database_url: str) -> None:
    """Accounts, numbers, secrets, injection and the unrouted box, end to end."""
    db = database_url
    ok(command(db, "db", "upgrade"))
    ok(
        smsinbox(
            db,
            "user",
            "add",
            "1234321@reseller",
            "--password",
            "pw",
            "--msisdn",
            "+61 411 001 001",
            "--timezone",
            "Australia/Sydney",
            "--reseller",
            "acme",
        )
    )
    ok(command(db, "user", "add", "bob", "--needs-activation", input="pw\npw\n"))
    listing = ok(command(db, "user", "list")).splitlines()
    assert listing == [
        "1234321@reseller\tactive\tAustralia/Sydney\tacme\t61411001001\t-",
        "bob\tneeds_activation\tUTC\t-\t-\t-",
    ]
    ok(command(db, "user", "activate", "bob"))
    refused(command(db, "user", "unblock", "bob"), "bob is active, not blocked")
    ok(command(db, "user", "block", "bob"))
    assert "bob\tblocked" in ok(command(db, "user", "list"))
    ok(command(db, "user", "unblock", "bob"))
    ok(command(db, "user", "passwd", "bob", "--password", "new-pw"))
    refused(command(db, "user", "block", "nobody"), "no account named 'nobody'")
    refused(command(db, "user", "add", "bob", "--password", "x"), "already exists")
    refused(
        command(db, "user", "add", "eve", "--password", "x", "--timezone", "Mars/Base"),
        "unknown IANA time zone",
    )

    ok(command(db, "number", "add", "447700900002", "bob"))
    refused(
        command(db, "number", "add", "447700900002", "1234321@reseller"), "already belongs to bob"
    )
    ok(command(db, "number", "remove", "447700900002"))
    refused(command(db, "number", "remove", "447700900002"), "not assigned")

    for group, verb in [("apikey", "create"), ("upstream", "add")]:
        created = ok(command(db, group, verb, "first")).splitlines()
        secret = created[-1]
        assert len(secret) > 40 and " " not in secret
        assert "first\tcreated" in ok(command(db, group, "list"))
        ok(command(db, group, "revoke", "first"))
        assert "revoked" in ok(command(db, group, "list"))
        refused(command(db, group, "revoke", "first"), "no active")

    message_id = ok(
        command(db, "inject", "--from", "61409560857", "--to", "61411001001", "--text", "Hello ☺")
    ).strip()
    assert message_id.isdigit()
    shown = ok(command(db, "messages", "1234321@reseller"))
    assert shown.startswith(f"{message_id}\t") and shown.endswith("\tHello ☺\n")

    hex_id = ok(
        smsinbox(
            db,
            "inject",
            "--from",
            "1",
            "--to",
            "61411001001",
            "--hex",
            "234f345a",
            "--encoding",
            "8bit",
        )
    ).strip()
    assert int(hex_id) > int(message_id)
    refused(
        command(db, "inject", "--from", "1", "--to", "x", "--text", "t"),
        "to must be a phone number",
    )

    lost = command(db, "inject", "--from", "1", "--to", "15550001", "--text", "anyone?")
    assert lost.returncode == 0 and "unrouted" in lost.stderr
    assert "15550001\t7bit\tanyone?\n" in ok(command(db, "unrouted", "list"))
    assert "1 waiting message(s) moved" in ok(command(db, "unrouted", "assign", "15550001", "bob"))
    assert ok(command(db, "unrouted", "list")) == ""
    assert "\tanyone?\n" in ok(command(db, "messages", "bob"))

    assert "already at the newest schema" in ok(command(db, "db", "upgrade"))


def test_bad_settings_exit_with_2(tmp_path: Path) -> None:
    result = smsinbox("mysql://nope/x", "user", "list")
    assert result.returncode == 2
    assert result.stderr.startswith("error: database_url scheme 'mysql' is not supported")
    assert result.stderr.count("\n") == 1
    config = tmp_path / "smsinbox.toml"
    config.write_text('log_level = "loud"\n')
    result = smsinbox("sqlite:///x.db", "--config", str(config), "serve")
    assert result.returncode == 2
    assert result.stderr.startswith("error: log_level must be one of")


def _command_paths() -> list[list[str]]:
    root = get_command(app)
    paths: list[list[str]] = []
    for name, group in root.commands.items():  # type: ignore[attr-defined]
        children = getattr(group, "commands", None)
        if children:
            paths.extend([name, child] for child in children)
        else:
            paths.append([name])
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=" ".join)
def test_every_command_has_help(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output
    assert len(result.output.splitlines()) > 3


def test_push_commands(database_url: str, tmp_path: Path) -> None:
    db = database_url
    ok(command(db, "db", "upgrade"))
    ok(command(db, "user", "add", "alice", "--password", "pw", "--msisdn", "447700900001"))
    refused(command(db, "push", "add", "alice", "http://127.0.0.1:9/hook"), "private address")
    env_allow = {"SMSINBOX_PUSH_ALLOW_PRIVATE": "true"}
    added = command(db, "push", "add", "alice", "http://127.0.0.1:9/hook", env=env_allow)
    secret = ok(added).splitlines()[-1]
    assert secret.startswith("whsec_")
    ok(command(db, "push", "add", "alice", "http://127.0.0.1:9/mc5",
               "--format", "mc5", "--events", "mo,status", env=env_allow))  # fmt: skip
    listing = ok(command(db, "push", "list", "alice")).splitlines()
    assert listing[0].startswith("1\tenabled\tstandard\tmo\thttp://127.0.0.1:9/hook\twhsec_")
    assert listing[1] == "2\tenabled\tmc5\tmo,status\thttp://127.0.0.1:9/mc5\t-"
    refused(command(db, "push", "add", "alice", "http://x/", "--format", "xml", env=env_allow),
            "format must be one of")  # fmt: skip
    ok(command(db, "inject", "--from", "1", "--to", "447700900001", "--text", "hi"))
    assert ok(command(db, "push", "deliveries", "alice")) == ""  # nothing attempted yet
    assert "2 deliveries queued" in ok(command(db, "push", "replay", "alice", "--since", "0"))
    assert "removed" in ok(command(db, "push", "remove", "2"))
    refused(command(db, "push", "remove", "2"), "no push endpoint 2")
    refused(command(db, "push", "list", "nobody"), "no account named 'nobody'")
