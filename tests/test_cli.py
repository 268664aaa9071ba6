"""The `smsinbox` command as an operator runs it: a real process per command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from smsinbox.cli import app


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


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_operator_session(database_url: str) -> None:
    """Accounts, numbers, secrets, injection and the unrouted box, end to end."""
    db = database_url
    ok(smsinbox(db, "db", "upgrade"))
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
    ok(smsinbox(db, "user", "add", "bob", "--needs-activation", input="pw\npw\n"))
    listing = ok(smsinbox(db, "user", "list")).splitlines()
    assert listing == [
        "1234321@reseller\tactive\tAustralia/Sydney\tacme\t61411001001\t-",
        "bob\tneeds_activation\tUTC\t-\t-\t-",
    ]
    ok(smsinbox(db, "user", "activate", "bob"))
    refused(smsinbox(db, "user", "unblock", "bob"), "bob is active, not blocked")
    ok(smsinbox(db, "user", "block", "bob"))
    assert "bob\tblocked" in ok(smsinbox(db, "user", "list"))
    ok(smsinbox(db, "user", "unblock", "bob"))
    ok(smsinbox(db, "user", "passwd", "bob", "--password", "new-pw"))
    refused(smsinbox(db, "user", "block", "nobody"), "no account named 'nobody'")
    refused(smsinbox(db, "user", "add", "bob", "--password", "x"), "already exists")
    refused(
        smsinbox(db, "user", "add", "eve", "--password", "x", "--timezone", "Mars/Base"),
        "unknown IANA time zone",
    )

    ok(smsinbox(db, "number", "add", "447700900002", "bob"))
    refused(
        smsinbox(db, "number", "add", "447700900002", "1234321@reseller"), "already belongs to bob"
    )
    ok(smsinbox(db, "number", "remove", "447700900002"))
    refused(smsinbox(db, "number", "remove", "447700900002"), "not assigned")

    for group, verb in [("apikey", "create"), ("upstream", "add")]:
        created = ok(smsinbox(db, group, verb, "first")).splitlines()
        secret = created[-1]
        assert len(secret) > 40 and " " not in secret
        assert "first\tcreated" in ok(smsinbox(db, group, "list"))
        ok(smsinbox(db, group, "revoke", "first"))
        assert "revoked" in ok(smsinbox(db, group, "list"))
        refused(smsinbox(db, group, "revoke", "first"), "no active")

    message_id = ok(
        smsinbox(db, "inject", "--from", "61409560857", "--to", "61411001001", "--text", "Hello ☺")
    ).strip()
    assert message_id.isdigit()
    shown = ok(smsinbox(db, "messages", "1234321@reseller"))
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
        smsinbox(db, "inject", "--from", "1", "--to", "x", "--text", "t"),
        "to must be a phone number",
    )

    lost = smsinbox(db, "inject", "--from", "1", "--to", "15550001", "--text", "anyone?")
    assert lost.returncode == 0 and "unrouted" in lost.stderr
    assert "15550001\t7bit\tanyone?\n" in ok(smsinbox(db, "unrouted", "list"))
    assert "1 waiting message(s) moved" in ok(smsinbox(db, "unrouted", "assign", "15550001", "bob"))
    assert ok(smsinbox(db, "unrouted", "list")) == ""
    assert "\tanyone?\n" in ok(smsinbox(db, "messages", "bob"))

    assert "already at the newest schema" in ok(smsinbox(db, "db", "upgrade"))


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
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        children = getattr(command, "commands", None)
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
    ok(smsinbox(db, "db", "upgrade"))
    ok(smsinbox(db, "user", "add", "alice", "--password", "pw", "--msisdn", "447700900001"))
    refused(smsinbox(db, "push", "add", "alice", "http://127.0.0.1:9/hook"), "private address")
    env_allow = {"SMSINBOX_PUSH_ALLOW_PRIVATE": "true"}
    added = smsinbox_env(db, env_allow, "push", "add", "alice", "http://127.0.0.1:9/hook")
    secret = ok(added).splitlines()[-1]
    assert secret.startswith("whsec_")
    ok(smsinbox_env(db, env_allow, "push", "add", "alice", "http://127.0.0.1:9/mc5",
                    "--format", "mc5", "--events", "mo,status"))  # fmt: skip
    listing = ok(smsinbox(db, "push", "list", "alice")).splitlines()
    assert listing[0].startswith("1\tenabled\tstandard\tmo\thttp://127.0.0.1:9/hook\twhsec_")
    assert listing[1] == "2\tenabled\tmc5\tmo,status\thttp://127.0.0.1:9/mc5\t-"
    refused(smsinbox_env(db, env_allow, "push", "add", "alice", "http://x/", "--format", "xml"),
            "format must be one of")  # fmt: skip
    ok(smsinbox(db, "inject", "--from", "1", "--to", "447700900001", "--text", "hi"))
    assert ok(smsinbox(db, "push", "deliveries", "alice")) == ""  # nothing attempted yet
    assert "2 deliveries queued" in ok(smsinbox(db, "push", "replay", "alice", "--since", "0"))
    assert "removed" in ok(smsinbox(db, "push", "remove", "2"))
    refused(smsinbox(db, "push", "remove", "2"), "no push endpoint 2")
    refused(smsinbox(db, "push", "list", "nobody"), "no account named 'nobody'")


def smsinbox_env(
    database_url: str, extra: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SMSINBOX_DATABASE_URL": database_url, **extra}
    return subprocess.run(
        [sys.executable, "-m", "smsinbox", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
