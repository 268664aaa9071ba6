"""`smsinbox user`, `number`, `apikey` and `upstream`: accounts, their numbers and secrets."""

from __future__ import annotations

from typing import Annotated

import typer

from smsinbox.cli.base import (
    JsonOption,
    PasswordStdinOption,
    apikey_app,
    iso_time,
    number_app,
    password_from,
    print_json,
    run,
    upstream_app,
    user_app,
    when,
)
from smsinbox.models import AccountStatus
from smsinbox.services import Services


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    username: str,
    password: Annotated[
        str | None,
        typer.Option(help="The password (asked for when not given; visible in `ps` if given)."),
    ] = None,
    password_stdin: PasswordStdinOption = False,
    msisdn: Annotated[
        list[str] | None, typer.Option(help="A number the account owns (repeatable).")
    ] = None,
    timezone: Annotated[
        str | None, typer.Option(help="IANA time zone (setting: default_time_zone).")
    ] = None,
    reseller: Annotated[str | None, typer.Option(help="Reseller the account belongs to.")] = None,
    region: Annotated[
        str | None,
        typer.Option(
            help="Country (GB, DE, ...) of its national numbers (setting: default_region)."
        ),
    ] = None,
    needs_activation: Annotated[
        bool, typer.Option(help="Create the account waiting for `user activate`.")
    ] = False,
) -> None:
    """Create an account."""
    status = AccountStatus.NEEDS_ACTIVATION if needs_activation else AccountStatus.ACTIVE
    secret = password_from(password, password_stdin)

    async def work(services: Services) -> None:
        account = await services.accounts.add(
            username,
            secret,
            msisdns=tuple(msisdn or ()),
            time_zone=timezone,
            reseller=reseller,
            status=status,
            region=region,
        )
        typer.echo(f"created account {account.username} ({account.status.value})")

    run(ctx, work)


@user_app.command("list")
def user_list(ctx: typer.Context, json: JsonOption = False) -> None:
    """List accounts: username, status, time zone, reseller, numbers, region."""

    async def work(services: Services) -> None:
        accounts = await services.store.list_accounts()
        if json:
            print_json(
                [
                    {
                        "username": account.username,
                        "status": account.status.value,
                        "time_zone": account.time_zone,
                        "reseller": account.reseller,
                        "region": account.region,
                        "numbers": list(account.msisdns),
                    }
                    for account in accounts
                ]
            )
            return
        for account in accounts:
            typer.echo(
                "\t".join(
                    [
                        account.username,
                        account.status.value,
                        account.time_zone,
                        account.reseller or "-",
                        ",".join(account.msisdns) or "-",
                        account.region or "-",
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
        str | None,
        typer.Option(help="The new password (asked for when not given; visible in `ps`)."),
    ] = None,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Change an account's password; its auth tokens and web sessions stop working."""
    secret = password_from(password, password_stdin, prompt="New password")

    async def work(services: Services) -> None:
        await services.accounts.change_password(username, secret)

    run(ctx, work)
    typer.echo(f"password of {username} changed")


@user_app.command("region")
def user_region(
    ctx: typer.Context,
    username: str,
    region: Annotated[
        str | None,
        typer.Argument(help="A country code such as GB; none: the default_region setting."),
    ] = None,
) -> None:
    """Set the country whose national forms of numbers (07700 900123) the account means."""

    async def work(services: Services) -> str | None:
        return await services.accounts.set_region(username, region)

    stored = run(ctx, work)
    if stored is None:
        typer.echo(f"{username} reads numbers in the default region")
    else:
        typer.echo(f"{username} reads national numbers as {stored}'s")


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
    def list_(ctx: typer.Context, json: JsonOption = False) -> None:
        async def work(services: Services) -> None:
            credentials = await getattr(services, attribute).list()
            if json:
                print_json(
                    [
                        {
                            "name": credential.name,
                            "created_at": iso_time(credential.created_at),
                            "revoked_at": iso_time(credential.revoked_at),
                        }
                        for credential in credentials
                    ]
                )
                return
            for credential in credentials:
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
