"""The `smsinbox` command tree and what every command shares: settings, the store, errors."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from smsinbox.config import ConfigError, Settings, load_settings
from smsinbox.errors import DomainError
from smsinbox.services import Services

T = TypeVar("T")

app = typer.Typer(
    help="smsinbox: a self-hostable SMS inbox server.",
    no_args_is_help=True,
    add_completion=False,
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


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


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
        fail(str(error), 2)


def run(ctx: typer.Context, work: Callable[[Services], Awaitable[T]], *, start: bool = True) -> T:
    """Build the services, check or migrate the schema, run `work`, close everything."""
    settings = settings_of(ctx)

    async def session() -> T:
        try:
            services = Services.build(settings)
        except ValueError as error:
            fail(str(error), 2)
        try:
            if start:
                await services.start()
            return await work(services)
        finally:
            await services.close()

    try:
        return asyncio.run(session())
    except DomainError as error:
        fail(error.detail)


def when(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "-"
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")
