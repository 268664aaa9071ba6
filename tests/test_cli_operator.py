"""What an operator meets first: a store that is not there, a URL mistyped, a database down,
the schema's commands, answers for scripts (`--json`, exit codes), secrets kept out of `ps`,
and long work that says how far it got. Every command runs as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from smsinbox.config import Settings
from smsinbox.core.passwords import verify_password
from smsinbox.services import Services
from smsinbox.store.migrate import head_revision, history
from tests.commands import Ran, smsinbox
from tests.conftest import PG_URL, free_port

EX_NOINPUT, EX_TEMPFAIL = 66, 75


def ok(result: Ran) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_line_error(result: Ran, code: int) -> str:
    """The command failed with `code` and said why in one line, without a traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stderr.startswith("error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""
    return result.stderr


def as_json(result: Ran) -> object:
    return json.loads(ok(result))


# --- a store that is not there ------------------------------------------------------------


def test_a_missing_sqlite_store_is_not_created(tmp_path: Path) -> None:
    where = tmp_path / "nonexistent" / "dir" / "x.db"
    said = one_line_error(smsinbox(f"sqlite:///{where}", "user", "list", process=True), EX_NOINPUT)
    assert f"no smsinbox database at {where}" in said and "smsinbox db upgrade" in said
    assert not (tmp_path / "nonexistent").exists()


def test_the_default_store_is_not_created_in_another_directory(tmp_path: Path) -> None:
    said = one_line_error(smsinbox(None, "user", "list", cwd=tmp_path), EX_NOINPUT)
    assert str(tmp_path / "var" / "smsinbox.db") in said  # the absolute path it looked at
    assert list(tmp_path.iterdir()) == []


def test_db_upgrade_creates_the_store_and_says_where(tmp_path: Path) -> None:
    where = tmp_path / "state" / "smsinbox.db"
    url = f"sqlite:///{where}"
    assert ok(smsinbox(url, "db", "upgrade")) == (
        f"created the smsinbox schema {head_revision()} in {where}\n"
    )
    assert where.is_file()
    assert ok(smsinbox(url, "user", "list")) == ""
    assert ok(smsinbox(url, "db", "upgrade")) == (
        f"{where} is already at the newest schema, {head_revision()}\n"
    )


@pytest.mark.parametrize(
    "url",
    ["notaurl", "postgresql://u:secret@127.0.0.1:notaport/db", "mysql://x/y", "sqlite://"],
)
def test_a_database_url_that_is_wrong_is_one_line_with_the_password_hidden(url: str) -> None:
    said = one_line_error(smsinbox(url, "user", "list"), 2)
    assert "secret" not in said
    assert "sqlite:///" in said or "SQLite needs a file path" in said


def test_an_unreachable_postgresql_says_why_with_exit_75() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/smsinbox"
    said = one_line_error(
        smsinbox(url, "user", "list", env={"SMSINBOX_DB_TIMEOUT": "2"}, process=True), EX_TEMPFAIL
    )
    assert said.startswith("error: store unavailable: ")
    assert "refused" in said.lower() or "connect" in said.lower()  # the cause, not only "down"


def _require_postgres() -> str:
    if not PG_URL:
        pytest.skip("needs SMSINBOX_TEST_DATABASE_URL")
    return PG_URL


def _url_of_database(name: str) -> str:
    parts = urlsplit(_require_postgres())
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _create_database(name: str) -> None:
    connection = await asyncpg.connect(_url_of_database("postgres"))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _drop_database(name: str) -> None:
    connection = await asyncpg.connect(_url_of_database("postgres"))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def test_a_postgresql_database_that_does_not_exist_is_exit_66() -> None:
    url = _url_of_database(f"smsinbox_t_absent_{uuid.uuid4().hex[:8]}")
    said = one_line_error(smsinbox(url, "user", "list"), EX_NOINPUT)
    assert "does not exist" in said and "create it" in said


def test_an_empty_postgresql_database_is_not_given_a_schema_by_admin_commands() -> None:
    name = f"smsinbox_t_empty_{uuid.uuid4().hex[:8]}"
    asyncio.run(_create_database(name))
    try:
        url = _url_of_database(name)
        said = one_line_error(smsinbox(url, "number", "remove", "447700900001"), EX_NOINPUT)
        assert "no smsinbox schema in postgresql://" in said and name in said
        one_line_error(smsinbox(url, "db", "current"), EX_NOINPUT)
        assert "created the smsinbox schema" in ok(smsinbox(url, "db", "upgrade"))
        assert ok(smsinbox(url, "user", "list")) == ""
    finally:
        asyncio.run(_drop_database(name))


# --- the schema's commands ----------------------------------------------------------------


def test_db_current_history_and_downgrade(database_url: str) -> None:
    db = database_url
    ok(smsinbox(db, "db", "upgrade"))
    head = head_revision()
    known = [revision.revision for revision in history()]
    assert known[-1] == head
    assert ok(smsinbox(db, "db", "current")) == f"{head} (the newest: up to date)\n"
    current = as_json(smsinbox(db, "db", "current", "--json"))
    assert isinstance(current, dict)
    assert current["revision"] == head and current["head"] == head
    listed = as_json(smsinbox(db, "db", "history", "--json"))
    assert isinstance(listed, list)
    assert [entry["revision"] for entry in listed] == known
    assert [entry["current"] for entry in listed] == [False] * (len(known) - 1) + [True]
    assert all(entry["title"] for entry in listed)

    back_to = known[-3]
    refused = smsinbox(db, "db", "downgrade", back_to)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    planned = as_json(smsinbox(db, "db", "downgrade", back_to, "--dry-run", "--json"))
    assert isinstance(planned, dict)
    assert planned["undone"] == [known[-1], known[-2]] and planned["dry_run"] is True
    assert ok(smsinbox(db, "db", "current")).startswith(head)  # nothing undone

    assert ok(smsinbox(db, "db", "downgrade", back_to, "--yes")) == (
        f"undid {known[-1]}, {known[-2]} in {as_json_where(db)}; it is at {back_to} now\n"
    )
    behind = ok(smsinbox(db, "db", "current"))
    assert behind.startswith(back_to) and "run `smsinbox db upgrade`" in behind
    # With migrate_on_start off, a command on the old schema says what to do, exit 78.
    off = {"SMSINBOX_MIGRATE_ON_START": "false"}
    said = one_line_error(smsinbox(db, "user", "list", env=off), 78)
    assert "smsinbox db upgrade" in said
    assert ok(smsinbox(db, "db", "upgrade")) == (
        f"migrated {as_json_where(db)} from schema {back_to} to {head}\n"
    )
    one_line_error(smsinbox(db, "db", "downgrade", "9999", "--yes"), 2)


def test_a_downgrade_to_the_first_revision_and_back_keeps_the_messages(
    database_url: str,
) -> None:
    db = database_url
    ok(smsinbox(db, "db", "upgrade"))
    ok(smsinbox(db, "user", "add", "alice", "--password", "pw", "--msisdn", "447700900001"))
    ok(smsinbox(db, "inject", "--from", "1", "--to", "447700900001", "--text", "kept"))
    first = history()[0].revision
    undone = as_json(smsinbox(db, "db", "downgrade", first, "--yes", "--json"))
    assert undone["to"] == first and len(undone["undone"]) == len(history()) - 1  # type: ignore[index]
    ok(smsinbox(db, "db", "upgrade"))
    shown = as_json(smsinbox(db, "messages", "alice", "--json"))
    assert [m["text"] for m in shown] == ["kept"]  # type: ignore[index]


def as_json_where(database_url: str) -> str:
    found = as_json(smsinbox(database_url, "db", "current", "--json"))
    assert isinstance(found, dict)
    return str(found["database"])


# --- answers for scripts ------------------------------------------------------------------


def test_version_and_shell_completion() -> None:
    import smsinbox as package

    assert ok(smsinbox(None, "--version", process=True)) == f"smsinbox {package.__version__}\n"
    completion = {"_SMSINBOX_COMPLETE": "complete_bash", "COMP_WORDS": "smsinbox us",
                  "COMP_CWORD": "1"}  # fmt: skip
    assert "user" in ok(smsinbox(None, env=completion, process=True)).split()
    script = ok(
        smsinbox(None, "--show-completion", "bash", env={"SHELL": "/bin/bash"}, process=True)
    )
    assert "_SMSINBOX_COMPLETE" in script


def test_every_listing_answers_in_json(database_url: str) -> None:
    db = database_url
    ok(smsinbox(db, "db", "upgrade"))
    ok(smsinbox(db, "user", "add", "alice", "--password", "pw", "--msisdn", "447700900001"))
    ok(smsinbox(db, "apikey", "create", "app"))
    ok(smsinbox(db, "upstream", "add", "kannel"))
    allow = {"SMSINBOX_PUSH_ALLOW_PRIVATE": "true"}
    ok(smsinbox(db, "push", "add", "alice", "http://127.0.0.1:9/hook", env=allow))
    injected = as_json(
        smsinbox(db, "inject", "--from", "447700900123", "--to", "447700900001",
                 "--text", "line one\nline two\tand a tab", "--json")
    )  # fmt: skip
    assert isinstance(injected, dict) and injected["outcome"] == "stored"
    lost = as_json(smsinbox(db, "inject", "--from", "1", "--to", "15550001", "--text", "?",
                            "--json"))  # fmt: skip
    assert isinstance(lost, dict) and lost["outcome"] == "unrouted"

    assert as_json(smsinbox(db, "user", "list", "--json")) == [
        {"username": "alice", "status": "active", "time_zone": "UTC", "reseller": None,
         "region": None, "numbers": ["447700900001"]}
    ]  # fmt: skip
    for group in ("apikey", "upstream"):
        listed = as_json(smsinbox(db, group, "list", "--json"))
        assert isinstance(listed, list) and listed[0]["revoked_at"] is None
        assert listed[0]["created_at"].endswith("Z")
    (message,) = as_json(smsinbox(db, "messages", "alice", "--json"))  # type: ignore[misc]
    assert message["id"] == injected["id"]
    assert message["text"] == "line one\nline two\tand a tab"  # exactly, in JSON
    assert message["direction"] == "in" and message["locked"] is False
    # In the tab-separated listing the text stays on its line, its breaks shown as escapes.
    shown = ok(smsinbox(db, "messages", "alice"))
    assert shown.count("\n") == 1 and shown.endswith("\tline one\\nline two\\tand a tab\n")
    (waiting,) = as_json(smsinbox(db, "unrouted", "list", "--json"))  # type: ignore[misc]
    assert waiting["recipient"] == "15550001" and waiting["text"] == "?"
    (endpoint,) = as_json(smsinbox(db, "push", "list", "alice", "--json"))  # type: ignore[misc]
    assert endpoint["url"] == "http://127.0.0.1:9/hook" and endpoint["enabled"] is True
    assert as_json(smsinbox(db, "push", "deliveries", "alice", "--json")) == []
    assert as_json(smsinbox(db, "smpp", "list", "--json")) == []
    moved = as_json(smsinbox(db, "unrouted", "assign", "15550001", "alice", "--json"))
    assert moved == {"number": "15550001", "username": "alice", "moved": 1}


def test_smpp_bind_in_json_never_shows_its_password(database_url: str) -> None:
    db = database_url
    ok(smsinbox(db, "db", "upgrade"))
    ok(smsinbox(db, "smpp", "add", "smsc1", "--host", "127.0.0.1", "--system-id", "sys",
                "--password-stdin", "--disabled", input="s3cret\n"))  # fmt: skip
    (bind,) = as_json(smsinbox(db, "smpp", "list", "--json"))  # type: ignore[misc]
    shown = as_json(smsinbox(db, "smpp", "show", "smsc1", "--json"))
    assert shown == bind
    assert bind["name"] == "smsc1" and bind["enabled"] is False and bind["system_id"] == "sys"
    assert "password" not in bind and "s3cret" not in json.dumps(bind)


# --- secrets kept out of ps ---------------------------------------------------------------


def test_passwords_from_stdin(database_url: str) -> None:
    db = database_url
    ok(smsinbox(db, "db", "upgrade"))
    ok(smsinbox(db, "user", "add", "alice", "--password-stdin", input="first pw\n", process=True))
    assert asyncio.run(_password_is(db, "alice", "first pw"))
    ok(smsinbox(db, "user", "passwd", "alice", "--password-stdin", input="second pw\r\n"))
    assert asyncio.run(_password_is(db, "alice", "second pw"))
    empty = smsinbox(db, "user", "passwd", "alice", "--password-stdin", input="")
    assert empty.returncode == 2 and "standard input" in empty.stderr
    both = smsinbox(db, "user", "passwd", "alice", "--password", "x", "--password-stdin",
                    input="y\n")  # fmt: skip
    assert both.returncode == 2
    assert asyncio.run(_password_is(db, "alice", "second pw"))


async def _password_is(database_url: str, username: str, password: str) -> bool:
    services = Services.build(Settings(database_url=database_url))
    try:
        account = await services.store.get_account(username)
        assert account is not None
        return await verify_password(account.password_hash, password)
    finally:
        await services.close()


def test_secret_settings_from_files(tmp_path: Path) -> None:
    database = tmp_path / "smsinbox.db"
    url_file = tmp_path / "database_url"
    url_file.write_text(f"sqlite:///{database}\n")
    env = {"SMSINBOX_DATABASE_URL_FILE": str(url_file)}
    assert str(database) in ok(smsinbox(None, "db", "upgrade", env=env))
    missing = smsinbox(None, "user", "list", env={"SMSINBOX_ADMIN_TOKEN_FILE": "/nonexistent"})
    assert missing.returncode == 2 and "SMSINBOX_ADMIN_TOKEN_FILE" in missing.stderr


# --- long work says how far it got, and can be tried first --------------------------------


def test_prune_dry_run_changes_nothing_and_prune_reports_progress(database_url: str) -> None:
    db = database_url
    ok(smsinbox(db, "db", "upgrade"))
    ok(smsinbox(db, "user", "add", "alice", "--password", "pw", "--msisdn", "447700900001"))
    for n in range(5):
        ok(smsinbox(db, "inject", "--from", "1", "--to", "447700900001", "--text", f"m{n}"))
    capped = {"SMSINBOX_RETENTION_MAX_MESSAGES": "3"}
    plan = as_json(smsinbox(db, "prune", "--dry-run", "--json", env=capped))
    assert plan == {"by_count": 2, "by_age": 0, "tombstones": 0, "dry_run": True}
    assert "would prune 2 message(s)" in ok(smsinbox(db, "prune", "--dry-run", env=capped))
    assert len(as_json(smsinbox(db, "messages", "alice", "--json"))) == 5  # type: ignore[arg-type]

    pruned = smsinbox(db, "prune", env=capped)
    assert ok(pruned).startswith("pruned 2 message(s) over the per-account cap")
    assert "pruning: 2 of 2" in pruned.stderr  # not a terminal: a plain progress line
    kept = as_json(smsinbox(db, "messages", "alice", "--json"))
    assert [m["text"] for m in kept] == ["m4", "m3", "m2"]  # type: ignore[index]


def test_push_replay_dry_run_and_progress(database_url: str) -> None:
    db = database_url
    ok(smsinbox(db, "db", "upgrade"))
    ok(smsinbox(db, "user", "add", "alice", "--password", "pw", "--msisdn", "447700900001"))
    allow = {"SMSINBOX_PUSH_ALLOW_PRIVATE": "true"}
    ok(smsinbox(db, "push", "add", "alice", "http://127.0.0.1:9/hook", env=allow))
    for n in range(3):
        ok(smsinbox(db, "inject", "--from", "1", "--to", "447700900001", "--text", f"m{n}"))
    planned = as_json(smsinbox(db, "push", "replay", "alice", "--since", "0", "--dry-run",
                               "--json"))  # fmt: skip
    assert planned == {"queued": 3, "dry_run": True}
    replayed = smsinbox(db, "push", "replay", "alice", "--since", "0")
    assert ok(replayed) == "3 deliveries queued\n"
    assert "replaying: 3 of 3" in replayed.stderr
    unknown = smsinbox(db, "push", "replay", "nobody", "--since", "0")
    assert unknown.returncode == 1 and "no account named 'nobody'" in unknown.stderr


def test_recount_rebuilds_conversations_from_messages(database_url: str) -> None:
    db = database_url
    ok(smsinbox(db, "db", "upgrade"))
    ok(smsinbox(db, "user", "add", "alice", "--password", "pw", "--msisdn", "447700900001"))
    for sender, text in [("447700900123", "one"), ("447700900123", "two"), ("447700900555", "x")]:
        ok(smsinbox(db, "inject", "--from", sender, "--to", "447700900001", "--text", text))
    clean = as_json(smsinbox(db, "recount", "--json"))
    assert clean == [{"username": "alice", "conversations": 2, "added": 0, "corrected": 0,
                      "removed": 0, "dry_run": False}]  # fmt: skip

    asyncio.run(_break_conversations(db))
    planned = as_json(smsinbox(db, "recount", "alice", "--dry-run", "--json"))
    assert planned == [{"username": "alice", "conversations": 2, "added": 1, "corrected": 1,
                        "removed": 1, "dry_run": True}]  # fmt: skip
    assert as_json(smsinbox(db, "recount", "alice", "--dry-run", "--json")) == planned
    fixed = smsinbox(db, "recount")
    assert ok(fixed) == ("alice\t2 conversation(s)\tfixed 1 missing, 1 wrong, 1 without messages\n")
    assert "recounting: 1 of 1" in fixed.stderr
    assert asyncio.run(_conversations(db)) == [
        ("447700900123", 2, 2, "two"),
        ("447700900555", 1, 1, "x"),
    ]
    one_line_error(smsinbox(db, "recount", "nobody"), 1)


async def _break_conversations(database_url: str) -> None:
    from sqlalchemy import text

    services = Services.build(Settings(database_url=database_url))
    try:
        async with services.store.db.transaction("test_break") as connection:
            await connection.execute(
                text("UPDATE conversations SET message_count = 99, unread_count = 0 "
                     "WHERE counterpart = '447700900123'")
            )  # fmt: skip
            await connection.execute(
                text("DELETE FROM conversations WHERE counterpart = '447700900555'")
            )
            await connection.execute(
                text(
                    "INSERT INTO conversations (account_id, counterpart, message_count, "
                    "unread_count, unsent_count, last_message_id, last_message_at, snippet) "
                    "SELECT id, '447700900999', 1, 1, 0, 1, 0, 'ghost' FROM accounts"
                )
            )
    finally:
        await services.close()


async def _conversations(database_url: str) -> list[tuple[str, int, int, str]]:
    from sqlalchemy import text

    services = Services.build(Settings(database_url=database_url))
    try:
        async with services.store.db.snapshot("test_read") as connection:
            rows = await connection.execute(
                text("SELECT counterpart, message_count, unread_count, snippet "
                     "FROM conversations ORDER BY counterpart")
            )  # fmt: skip
            return [tuple(row) for row in rows]  # type: ignore[misc]
    finally:
        await services.close()


def test_a_secret_in_both_forms_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc\n")
    env = {"SMSINBOX_ADMIN_TOKEN": "xyz", "SMSINBOX_ADMIN_TOKEN_FILE": str(token)}
    said = one_line_error(smsinbox(f"sqlite:///{tmp_path / 'x.db'}", "db", "upgrade", env=env), 2)
    assert "SMSINBOX_ADMIN_TOKEN or SMSINBOX_ADMIN_TOKEN_FILE, not both" in said


# --- numbers as people write them ---------------------------------------------------------


def test_numbers_written_with_00_or_nationally_route_to_their_owner(database_url: str) -> None:
    db = database_url
    ok(smsinbox(db, "db", "upgrade"))
    ok(smsinbox(db, "user", "add", "alice", "--password", "pw", "--msisdn", "447700900001"))
    # The finding, as written: 00 and the number, no region needed.
    routed = as_json(smsinbox(db, "inject", "--from", "1", "--to", "00447700900001",
                              "--text", "zero zero", "--json"))  # fmt: skip
    assert isinstance(routed, dict) and routed["outcome"] == "stored"
    # Nationally: the operator's region says which country 07700 ... is in.
    gb = {"SMSINBOX_DEFAULT_REGION": "GB"}
    national = smsinbox(db, "inject", "--from", "07700 900123", "--to", "07700 900001",
                        "--text", "national", "--json", env=gb)  # fmt: skip
    assert as_json(national)["outcome"] == "stored"  # type: ignore[index]
    shown = as_json(smsinbox(db, "messages", "alice", "--json"))
    assert [(m["sender"], m["recipient"], m["text"]) for m in shown] == [  # type: ignore[index]
        ("447700900123", "447700900001", "national"),
        ("1", "447700900001", "zero zero"),
    ]
    # Without a region a national form cannot be placed: kept as written, unrouted.
    lost = as_json(smsinbox(db, "inject", "--from", "1", "--to", "07700 900001", "--text", "?",
                            "--json"))  # fmt: skip
    assert lost["outcome"] == "unrouted"  # type: ignore[index]

    # An account's own region: its numbers added in national form are stored in E.164.
    ok(smsinbox(db, "user", "add", "hans", "--password", "pw", "--region", "de"))
    assert ok(smsinbox(db, "number", "add", "0151 2345 6789", "hans")) == (
        "4915123456789 now belongs to hans\n"
    )
    listed = as_json(smsinbox(db, "user", "list", "--json"))
    assert [(a["username"], a["region"]) for a in listed] == [  # type: ignore[index]
        ("alice", None),
        ("hans", "DE"),
    ]
    assert (
        ok(smsinbox(db, "user", "region", "hans")) == "hans reads numbers in the default region\n"
    )
    assert "GB's" in ok(smsinbox(db, "user", "region", "hans", "gb"))
    bad = smsinbox(db, "user", "region", "hans", "XX")
    assert bad.returncode == 1 and "region" in bad.stderr
    refused = smsinbox(db, "user", "list", env={"SMSINBOX_DEFAULT_REGION": "Narnia"})
    assert refused.returncode == 2 and "default_region" in refused.stderr


def test_serve_says_where_it_created_the_store(tmp_path: Path) -> None:
    """The default store is relative to where `serve` runs: its log names the absolute path."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "smsinbox", "serve", "--port", str(port)],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("SMSINBOX_")},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        created = f"created the smsinbox schema {head_revision()} in {tmp_path}/var/smsinbox.db"
        for line in server.stderr:  # type: ignore[union-attr]
            if created in line:
                break
        else:
            pytest.fail("serve ended without saying where it created the store")
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert (tmp_path / "var" / "smsinbox.db").is_file()
