"""The `smsinbox` command: run the server and administer accounts, numbers and secrets."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from smsinbox.config import ConfigError, Settings, load_settings
from smsinbox.core.ingest import RawInbound
from smsinbox.core.retention import PruneReport
from smsinbox.errors import DomainError
from smsinbox.models import AccountStatus, IngestOutcome, SmppBind
from smsinbox.services import Services
from smsinbox.store.migrate import upgrade
from smsinbox.web.requestlog import LOG_FORMAT

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


def log_to_stderr(settings: Settings) -> None:
    """Logging for the long-running commands (serve, worker)."""
    logging.disable(logging.NOTSET)
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)


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


# --- server ------------------------------------------------------------------------------


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Listen address (setting: host).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (setting: port).")] = None,
) -> None:
    """Run the HTTP server (migrates the schema first unless migrate_on_start is off)."""
    import uvicorn

    from smsinbox.app import create_app
    from smsinbox.web.protocol import JoinedWritesProtocol

    settings = settings_of(ctx, host=host, port=port)
    log_to_stderr(settings)
    try:
        application = create_app(settings)
    except ValueError as error:
        fail(str(error), 2)
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # uvicorn's access log prints query strings, which carry passwords and tokens;
        # smsinbox logs each request itself without them.
        access_log=False,
        lifespan="on",
        http=JoinedWritesProtocol,
    )


@app.command()
def worker(ctx: typer.Context) -> None:
    """Run the push worker on its own (with push_worker off in `serve`), until stopped."""
    import signal

    settings = settings_of(ctx)
    log_to_stderr(settings)

    async def work(services: Services) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        from smsinbox.heap import settle_heap

        settle_heap()
        await services.push_worker.run(stop)

    run(ctx, work)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Migrate the database schema to the latest version."""

    async def work(services: Services) -> None:
        await upgrade(services.store.db)

    run(ctx, work, start=False)
    typer.echo("database is up to date")


# --- accounts ----------------------------------------------------------------------------


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    username: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
    msisdn: Annotated[
        list[str] | None, typer.Option(help="A number the account owns (repeatable).")
    ] = None,
    timezone: Annotated[
        str | None, typer.Option(help="IANA time zone (setting: default_time_zone).")
    ] = None,
    reseller: Annotated[str | None, typer.Option(help="Reseller the account belongs to.")] = None,
    needs_activation: Annotated[
        bool, typer.Option(help="Create the account waiting for `user activate`.")
    ] = False,
) -> None:
    """Create an account."""
    status = AccountStatus.NEEDS_ACTIVATION if needs_activation else AccountStatus.ACTIVE

    async def work(services: Services) -> None:
        account = await services.accounts.add(
            username,
            password,
            msisdns=tuple(msisdn or ()),
            time_zone=timezone,
            reseller=reseller,
            status=status,
        )
        typer.echo(f"created account {account.username} ({account.status.value})")

    run(ctx, work)


@user_app.command("list")
def user_list(ctx: typer.Context) -> None:
    """List accounts: username, status, time zone, reseller, numbers."""

    async def work(services: Services) -> None:
        for account in await services.store.list_accounts():
            typer.echo(
                "\t".join(
                    [
                        account.username,
                        account.status.value,
                        account.time_zone,
                        account.reseller or "-",
                        ",".join(account.msisdns) or "-",
                    ]
                )
            )

    run(ctx, work)


def _change_status(ctx: typer.Context, username: str, change: str, status: AccountStatus) -> None:
    async def work(services: Services) -> None:
        await getattr(services.accounts, change)(username)

    run(ctx, work)
    typer.echo(f"{username} is now {status.value}")


@user_app.command("block")
def user_block(ctx: typer.Context, username: str) -> None:
    """Block an account: its API calls are refused, its messages are still stored."""
    _change_status(ctx, username, "block", AccountStatus.BLOCKED)


@user_app.command("unblock")
def user_unblock(ctx: typer.Context, username: str) -> None:
    """Make a blocked account active again."""
    _change_status(ctx, username, "unblock", AccountStatus.ACTIVE)


@user_app.command("activate")
def user_activate(ctx: typer.Context, username: str) -> None:
    """Activate an account created with --needs-activation."""
    _change_status(ctx, username, "activate", AccountStatus.ACTIVE)


@user_app.command("passwd")
def user_passwd(
    ctx: typer.Context,
    username: str,
    password: Annotated[
        str, typer.Option(prompt="New password", hide_input=True, confirmation_prompt=True)
    ],
) -> None:
    """Change an account's password; its auth tokens stop working."""

    async def work(services: Services) -> None:
        await services.accounts.change_password(username, password)

    run(ctx, work)
    typer.echo(f"password of {username} changed")


@number_app.command("add")
def number_add(ctx: typer.Context, msisdn: str, username: str) -> None:
    """Route messages for MSISDN to USERNAME's account."""

    async def work(services: Services) -> str:
        return await services.accounts.add_number(msisdn, username)

    typer.echo(f"{run(ctx, work)} now belongs to {username}")


@number_app.command("remove")
def number_remove(ctx: typer.Context, msisdn: str) -> None:
    """Stop routing MSISDN; its new messages go to the unrouted box."""

    async def work(services: Services) -> str:
        return await services.accounts.remove_number(msisdn)

    typer.echo(f"{run(ctx, work)} no longer belongs to any account")


# --- secrets -----------------------------------------------------------------------------


def _credential_commands(
    sub: typer.Typer, attribute: str, noun: str, article: str, create_verb: str
) -> None:
    @sub.command(create_verb)
    def create(ctx: typer.Context, name: str) -> None:
        async def work(services: Services) -> str:
            _, secret = await getattr(services, attribute).create(name)
            return str(secret)

        secret = run(ctx, work)
        typer.echo(f"created {noun} {name}; the secret is shown only once:")
        typer.echo(secret)

    create.__doc__ = f"Create {article} {noun}; prints its secret alone on the last line."

    @sub.command("list")
    def list_(ctx: typer.Context) -> None:
        async def work(services: Services) -> None:
            for credential in await getattr(services, attribute).list():
                state = (
                    f"revoked {when(credential.revoked_at)}" if credential.revoked_at else "active"
                )
                typer.echo(f"{credential.name}\tcreated {when(credential.created_at)}\t{state}")

        run(ctx, work)

    list_.__doc__ = f"List {noun}s."

    @sub.command("revoke")
    def revoke(ctx: typer.Context, name: str) -> None:
        async def work(services: Services) -> None:
            await getattr(services, attribute).revoke(name)

        run(ctx, work)
        typer.echo(f"revoked {noun} {name}")

    revoke.__doc__ = f"Revoke {article} {noun}: its secret stops working at once."


_credential_commands(apikey_app, "api_keys", "API key", "an", "create")
_credential_commands(upstream_app, "upstreams", "upstream", "an", "add")


# --- messages ----------------------------------------------------------------------------


@app.command()
def inject(
    ctx: typer.Context,
    sender: Annotated[str, typer.Option("--from", help="Sender number or sender id.")],
    recipient: Annotated[str, typer.Option("--to", help="The number it was sent to.")],
    text: Annotated[
        str, typer.Option(help="Message text (for --encoding 8bit/16bit, or use --hex).")
    ] = "",
    hex_body: Annotated[
        str | None, typer.Option("--hex", help="Body as hex (8bit octets, 16bit UTF-16BE).")
    ] = None,
    encoding: Annotated[str, typer.Option(help="7bit, 8bit or 16bit.")] = "7bit",
    ref: Annotated[
        int | None, typer.Option(help="Id of the outgoing message this replies to.")
    ] = None,
    upstream_message_id: Annotated[
        str | None, typer.Option("--id", help="Upstream message id, for de-duplication.")
    ] = None,
) -> None:
    """Ingest one message through the same path as the network; prints its id."""
    raw = RawInbound(
        sender=sender,
        recipient=recipient,
        text=None if hex_body is not None else text.encode("utf-8"),
        hex=hex_body,
        encoding=encoding,
        upstream_message_id=upstream_message_id,
        ref=None if ref is None else str(ref),
    )

    async def work(services: Services) -> tuple[IngestOutcome, int]:
        result = await services.ingestor.accept(raw, upstream_id=None)
        return result.outcome, result.id

    outcome, identifier = run(ctx, work)
    if outcome is IngestOutcome.UNROUTED:
        typer.echo(f"no account owns {recipient}: kept in the unrouted box", err=True)
    typer.echo(identifier)


@app.command()
def messages(
    ctx: typer.Context,
    username: str,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """Show an account's newest messages, newest first."""

    async def work(services: Services) -> None:
        for message in await services.store.list_recent_messages(username, limit):
            reply = f" reply-to={message.reply_to_id}" if message.reply_to_id else ""
            typer.echo(
                f"{message.id}\t{when(message.received_at)}\t{message.direction.value}\t"
                f"{message.status}\t{message.sender} -> {message.recipient}\t"
                f"{message.encoding.value}{reply}\t{message.text!r}"
            )

    run(ctx, work)


@app.command()
def prune(ctx: typer.Context) -> None:
    """Apply the retention limits now (the server also does it every retention_interval)."""

    async def work(services: Services) -> PruneReport:
        return await services.retention.prune_once()

    report = run(ctx, work)
    typer.echo(
        f"pruned {report.by_count} message(s) over the per-account cap, {report.by_age} past "
        f"the age limit, {report.tombstones} expired delete(s) kept for device sync"
    )


@unrouted_app.command("list")
def unrouted_list(ctx: typer.Context, limit: Annotated[int, typer.Option(min=1)] = 1000) -> None:
    """Messages waiting for an account to own their number, oldest first."""

    async def work(services: Services) -> None:
        for message in await services.store.list_unrouted(limit):
            typer.echo(
                f"{message.id}\t{when(message.received_at)}\t{message.sender} -> "
                f"{message.recipient}\t{message.encoding.value}\t{message.text!r}"
            )

    run(ctx, work)


@unrouted_app.command("assign")
def unrouted_assign(ctx: typer.Context, msisdn: str, username: str) -> None:
    """Give MSISDN to USERNAME and move the messages waiting for it into that account."""

    async def work(services: Services) -> int:
        return await services.ingestor.assign_unrouted(msisdn, username)

    moved = run(ctx, work)
    typer.echo(f"{msisdn} now belongs to {username}; {moved} waiting message(s) moved")


# --- push ----------------------------------------------------------------------------------


@push_app.command("add")
def push_add(
    ctx: typer.Context,
    username: str,
    url: str,
    format: Annotated[str, typer.Option(help="standard, mc5 or eapi.")] = "standard",
    events: Annotated[str, typer.Option(help="Comma-separated: mo, status.")] = "mo",
) -> None:
    """Push USERNAME's messages to URL; for standard, prints the signing secret last."""

    async def work(services: Services) -> tuple[int, str | None]:
        endpoint = await services.push.add(username, url, format=format, events=events)
        return endpoint.id, endpoint.secret

    endpoint_id, secret = run(ctx, work)
    typer.echo(f"push endpoint {endpoint_id} added for {username} ({format}, {events})")
    if secret is not None:
        typer.echo("sign-check deliveries with this secret (shown only here and in push list):")
        typer.echo(secret)


@push_app.command("list")
def push_list(ctx: typer.Context, username: str) -> None:
    """USERNAME's push endpoints: id, state, format, events, URL, secret or why disabled."""

    async def work(services: Services) -> None:
        for endpoint in await services.push.endpoints_of(username):
            state = "enabled" if endpoint.enabled else f"disabled: {endpoint.disabled_reason}"
            typer.echo(
                f"{endpoint.id}\t{state}\t{endpoint.format}\t{','.join(endpoint.events)}\t"
                f"{endpoint.url}\t{endpoint.secret or '-'}"
            )

    run(ctx, work)


@push_app.command("remove")
def push_remove(ctx: typer.Context, endpoint_id: int) -> None:
    """Remove a push endpoint and its pending deliveries."""

    async def work(services: Services) -> None:
        await services.push.remove(endpoint_id)

    run(ctx, work)
    typer.echo(f"push endpoint {endpoint_id} removed")


@push_app.command("deliveries")
def push_deliveries(
    ctx: typer.Context,
    username: str,
    failed: Annotated[bool, typer.Option("--failed", help="Only failed attempts.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
) -> None:
    """The attempt log, newest first: time, delivery, message, state, HTTP status, latency,
    error, URL."""

    async def work(services: Services) -> None:
        for attempt in await services.push.attempts(username, failed_only=failed, limit=limit):
            typer.echo(
                f"{when(attempt.attempted_at)}\tdelivery {attempt.delivery_id}\t"
                f"message {attempt.message_id}\t{attempt.state}\t"
                f"{attempt.http_status or '-'}\t{attempt.latency_ms}ms\t"
                f"{attempt.error or '-'}\t{attempt.url}"
            )

    run(ctx, work)


@push_app.command("replay")
def push_replay(
    ctx: typer.Context,
    username: str,
    since: Annotated[str, typer.Option(help="Epoch seconds, or 'YYYY-MM-DD HH:MM[:SS]' (UTC).")],
) -> None:
    """Queue again every push of USERNAME's messages received since TIME."""

    async def work(services: Services) -> int:
        return await services.push.replay(username, since)

    typer.echo(f"{run(ctx, work)} deliveries queued")


# --- SMPP --------------------------------------------------------------------------------


@smpp_app.command("add")
def smpp_add(
    ctx: typer.Context,
    name: str,
    host: Annotated[str, typer.Option(help="The SMSC's host name or address.")],
    system_id: Annotated[str, typer.Option(help="The account at the SMSC (system_id).")],
    port: Annotated[int, typer.Option(help="The SMSC's port.")] = 2775,
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            help="The SMSC account's password (asked for when not given; at most 8 characters).",
        ),
    ] = "",
    system_type: Annotated[str, typer.Option(help="system_type, if the SMSC wants one.")] = "",
    mode: Annotated[str, typer.Option(help="receiver, transmitter or transceiver.")] = (
        "transceiver"
    ),
    address_range: Annotated[
        str, typer.Option(help="The addresses to receive for, if the SMSC routes by it.")
    ] = "",
    tls: Annotated[bool, typer.Option(help="Bind over TLS.")] = False,
    window: Annotated[int, typer.Option(help="Requests of ours in flight at once.")] = 10,
    throughput: Annotated[
        int, typer.Option(help="Most submit_sm a second; 0 leaves it to the SMSC.")
    ] = 0,
    enquire_link: Annotated[
        int, typer.Option(help="Seconds of silence before an enquire_link.")
    ] = 30,
    default_alphabet: Annotated[
        str, typer.Option(help="What data_coding 0 means at this SMSC: gsm, latin1 or ascii.")
    ] = "gsm",
    gsm_packed: Annotated[
        bool, typer.Option(help="The SMSC packs GSM 7-bit text eight septets to seven octets.")
    ] = False,
    route: Annotated[
        list[str] | None,
        typer.Option(
            help="A recipient prefix whose messages this bind sends (repeat it); * for every "
            "recipient no other bind's prefix claims. None: it sends nothing."
        ),
    ] = None,
    disabled: Annotated[bool, typer.Option(help="Add it without binding yet.")] = False,
) -> None:
    """Bind to an SMSC: `smsinbox serve` binds within seconds and keeps the bind up."""

    async def work(services: Services) -> SmppBind:
        return await services.smpp.add(
            SmppBind(
                name=name, host=host, port=port, system_id=system_id, password=password,
                system_type=system_type, mode=mode, address_range=address_range, tls=tls,
                window=window, throughput=throughput, enquire_link_s=enquire_link,
                default_alphabet=default_alphabet, gsm_packed=gsm_packed, enabled=not disabled,
                routes=" ".join(route or ()),
            )
        )  # fmt: skip

    bind = run(ctx, work)
    typer.echo(
        f"SMPP bind {bind.name} added: {bind.mode} to {bind.host}:{bind.port} as "
        f"{bind.system_id}" + (" (disabled)" if disabled else "")
    )


def _bind_line(bind: SmppBind) -> str:
    state = bind.state if bind.enabled else "disabled"
    error = f"\t{bind.last_error}" if bind.last_error and bind.state != "bound" else ""
    return (
        f"{bind.name}\t{state}\tsince {when(bind.state_at)}\t{bind.mode}\t"
        f"{bind.host}:{bind.port}{' tls' if bind.tls else ''}\t{bind.system_id}{error}"
    )


@smpp_app.command("list")
def smpp_list(ctx: typer.Context) -> None:
    """Each bind: name, state (bound, binding, backing off, stopped, disabled), since when,
    mode, SMSC, system_id, last error."""

    async def work(services: Services) -> None:
        for bind in await services.smpp.configured():
            typer.echo(_bind_line(bind))

    run(ctx, work)


@smpp_app.command("show")
def smpp_show(ctx: typer.Context, name: str) -> None:
    """One bind's settings and state (the password is not shown)."""

    async def work(services: Services) -> SmppBind:
        return await services.smpp.get(name)

    bind = run(ctx, work)
    for field in dataclasses.fields(SmppBind):
        if field.name in ("password", "id", "upstream_id"):
            continue
        value = getattr(bind, field.name)
        if field.name in ("created_at", "state_at"):
            value = when(value)
        typer.echo(f"{field.name}: {value if value != '' else '-'}")


@smpp_app.command("routes")
def smpp_routes(
    ctx: typer.Context,
    name: str,
    prefixes: Annotated[
        list[str] | None,
        typer.Argument(help="Recipient prefixes, * for the rest; none: no sending."),
    ] = None,
) -> None:
    """Set the recipients a bind sends to (the running server applies it within seconds)."""

    async def work(services: Services) -> None:
        await services.smpp.set_routes(name, " ".join(prefixes or ()))

    run(ctx, work)
    typer.echo(f"SMPP bind {name} sends to: {' '.join(prefixes or ()) or 'nobody'}")


@smpp_app.command("remove")
def smpp_remove(ctx: typer.Context, name: str) -> None:
    """Unbind and forget a bind; the messages it delivered stay."""

    async def work(services: Services) -> None:
        await services.smpp.remove(name)

    run(ctx, work)
    typer.echo(f"SMPP bind {name} removed")


def _set_bind_enabled(ctx: typer.Context, name: str, enabled: bool) -> None:
    async def work(services: Services) -> None:
        await services.smpp.set_enabled(name, enabled)

    run(ctx, work)
    typer.echo(f"SMPP bind {name} {'enabled' if enabled else 'disabled'}")


@smpp_app.command("enable")
def smpp_enable(ctx: typer.Context, name: str) -> None:
    """Bind again (a disabled bind stays unbound)."""
    _set_bind_enabled(ctx, name, True)


@smpp_app.command("disable")
def smpp_disable(ctx: typer.Context, name: str) -> None:
    """Unbind cleanly and stay unbound until enabled."""
    _set_bind_enabled(ctx, name, False)


def main() -> None:
    app()
