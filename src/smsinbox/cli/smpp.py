"""`smsinbox smpp`: the SMSCs smsinbox binds to."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer

from smsinbox.cli.base import (
    JsonOption,
    PasswordStdinOption,
    iso_time,
    password_from,
    print_json,
    run,
    smpp_app,
    when,
)
from smsinbox.models import SmppBind
from smsinbox.services import Services


@smpp_app.command("add")
def smpp_add(
    ctx: typer.Context,
    name: str,
    host: Annotated[str, typer.Option(help="The SMSC's host name or address.")],
    system_id: Annotated[str, typer.Option(help="The account at the SMSC (system_id).")],
    port: Annotated[int, typer.Option(help="The SMSC's port.")] = 2775,
    password: Annotated[
        str | None,
        typer.Option(
            help="The SMSC account's password (asked for when not given; at most 8 characters)."
        ),
    ] = None,
    password_stdin: PasswordStdinOption = False,
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
    secret = password_from(password, password_stdin)

    async def work(services: Services) -> SmppBind:
        return await services.smpp.add(
            SmppBind(
                name=name, host=host, port=port, system_id=system_id, password=secret,
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
def smpp_list(ctx: typer.Context, json: JsonOption = False) -> None:
    """Each bind: name, state (bound, binding, backing off, stopped, disabled), since when,
    mode, SMSC, system_id, last error."""

    async def work(services: Services) -> list[SmppBind]:
        return await services.smpp.configured()

    binds = run(ctx, work)
    if json:
        print_json([_bind_json(bind) for bind in binds])
        return
    for bind in binds:
        typer.echo(_bind_line(bind))


@smpp_app.command("show")
def smpp_show(ctx: typer.Context, name: str, json: JsonOption = False) -> None:
    """One bind's settings and state (the password is not shown)."""

    async def work(services: Services) -> SmppBind:
        return await services.smpp.get(name)

    bind = run(ctx, work)
    if json:
        print_json(_bind_json(bind))
        return
    for field, value in _bind_fields(bind).items():
        if field in ("created_at", "state_at"):
            value = when(value)
        typer.echo(f"{field}: {value if value != '' else '-'}")


def _bind_fields(bind: SmppBind) -> dict[str, Any]:
    """A bind's settings and state as the operator sees them: never its password."""
    hidden = ("password", "id", "upstream_id")
    return {
        field.name: getattr(bind, field.name)
        for field in dataclasses.fields(SmppBind)
        if field.name not in hidden
    }


def _bind_json(bind: SmppBind) -> dict[str, Any]:
    fields = _bind_fields(bind)
    for name in ("created_at", "state_at"):
        fields[name] = iso_time(fields[name])
    return fields


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
