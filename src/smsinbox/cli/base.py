"""The `smsinbox` command tree and what every command shares: settings, the store, errors."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import typer

import smsinbox
from smsinbox.config import ConfigError, Settings, load_settings
from smsinbox.errors import DomainError, SchemaBehind, StoreMissing, StoreUnavailable
from smsinbox.services import Services
from smsinbox.store.database import unavailable_cause

T = TypeVar("T")

app = typer.Typer(
    help="smsinbox: a self-hostable SMS inbox server.",
    no_args_is_help=True,
    # `smsinbox --install-completion` / `--show-completion` for bash, zsh, fish, PowerShell.
    add_completion=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="Customer accounts.", no_args_is_help=True)
number_app = typer.Typer(help="Phone numbers and the accounts that own them.", no_args_is_help=True)
apikey_app = typer.Typer(help="API keys for the mysms API.", no_args_is_help=True)
upstream_app = typer.Typer(help="Upstreams allowed to deliver messages.", no_args_is_help=True)
unrouted_app = typer.Typer(help="Messages for numbers nobody owns.", no_args_is_help=True)
push_app = typer.Typer(help="Where accounts' messages are pushed.", no_args_is_help=True)
smpp_app = typer.Typer(help="SMSCs smsinbox binds to over SMPP.", no_args_is_help=True)
for name, sub in [
    ("db", db_app),
    ("user", user_app),
    ("number", number_app),
    ("apikey", apikey_app),
    ("upstream", upstream_app),
    ("unrouted", unrouted_app),
    ("push", push_app),
    ("smpp", smpp_app),
]:
    app.add_typer(sub, name=name)


class Exit(enum.IntEnum):
    """Exit statuses of every command (docs/operations.md lists them); the numbers above 2
    are sysexits.h's, which service managers and scripts already know."""

    OK = 0
    FAILED = 1  # the store refused what was asked: no such account, already exists, ...
    USAGE = 2  # a wrong option or argument, or settings that cannot be read
    DATA_ERR = 65  # an input file that is not what the command reads
    NO_STORE = 66  # no smsinbox store where the settings point
    TEMP_FAIL = 75  # the store is unreachable or timed out: trying again later may work
    CONFIG = 78  # the store's schema does not match this version: `smsinbox db upgrade`
    INTERRUPTED = 130  # stopped by Ctrl-C


def fail(message: str, code: int = Exit.FAILED) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def print_json(document: object) -> None:
    """A command's answer as JSON on stdout (`--json`): lists as an array of objects."""
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


JsonOption = Annotated[
    bool, typer.Option("--json", help="Answer in JSON (see docs/operations.md).")
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Say what would be done and change nothing.")
]


def printable(text: str) -> str:
    """Message text on one line of a listing: line breaks and tabs shown as \\n and \\t,
    other control characters as escapes, everything else (any script, emoji) as it is."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else _ESCAPES.get(ch, ch.encode("unicode_escape").decode())
        for ch in text
    )


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\"}


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"smsinbox {smsinbox.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(help="TOML settings file (default: $SMSINBOX_CONFIG).", dir_okay=False),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log what the store does to stderr.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    ctx.obj = config
    if verbose:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    elif ctx.invoked_subcommand != "serve":
        # Administrative commands answer in one line; store warnings would only add noise.
        # Only while the command runs: the CLI is also called in-process (by tests, tools).
        logging.disable(logging.WARNING)
        ctx.call_on_close(lambda: logging.disable(logging.NOTSET))


def settings_of(ctx: typer.Context, **overrides: Any) -> Settings:
    try:
        return load_settings(ctx.find_root().obj, **overrides)
    except (ConfigError, ValueError) as error:
        fail(str(error), Exit.USAGE)


def run(
    ctx: typer.Context,
    work: Callable[[Services], Awaitable[T]],
    *,
    start: bool = True,
    creates_store: bool = False,
) -> T:
    """Build the services, check or migrate the schema, run `work`, close everything.

    Only a command that `creates_store` may find no store and make one; every other command
    works on an existing store and says where it looked when there is none.
    """
    settings = settings_of(ctx)

    async def session() -> T:
        try:
            services = Services.build(settings, create_store=creates_store)
        except ValueError as error:
            fail(str(error), Exit.USAGE)
        try:
            if start:
                await services.start(existing_only=not creates_store)
            return await work(services)
        finally:
            await services.close()

    try:
        return asyncio.run(session())
    except StoreMissing as error:
        fail(error.detail, Exit.NO_STORE)
    except StoreUnavailable as error:
        fail(f"store unavailable: {unavailable_cause(error)}", Exit.TEMP_FAIL)
    except SchemaBehind as error:
        fail(error.detail, Exit.CONFIG)
    except DomainError as error:
        fail(error.detail)
    except KeyboardInterrupt:
        fail("interrupted", Exit.INTERRUPTED)


def when(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "-"
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def iso_time(epoch_ms: int | None) -> str | None:
    """A time for `--json`: ISO 8601 in UTC with milliseconds, or null."""
    if epoch_ms is None:
        return None
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


PasswordStdinOption = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from the first line of standard input (kept out of `ps`).",
    ),
]


def password_from(given: str | None, from_stdin: bool, *, prompt: str = "Password") -> str:
    """The password a command was given: from stdin, the option, or asked for twice.

    `--password` on the command line is visible to every user of the machine (in `ps` and
    the shell's history); `--password-stdin` and the prompt are not.
    """
    if from_stdin:
        if given is not None:
            fail("give the password with --password or --password-stdin, not both", Exit.USAGE)
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            fail("--password-stdin: standard input has no password on its first line", Exit.USAGE)
        return line
    if given is not None:
        return given
    return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=True))
