"""Account administration: the rules behind `smsinbox user ...` and `smsinbox number ...`."""

from __future__ import annotations

import re
import zoneinfo

from smsinbox.core.clock import Clock, now_ms
from smsinbox.core.numbers import normalize_msisdn, validate_region
from smsinbox.core.passwords import hash_password
from smsinbox.errors import InvalidInput, MissingParameter, NotFound
from smsinbox.models import Account, AccountStatus
from smsinbox.store import Store

# Free-form, as on the MC5 platform ("1234321@reseller"): anything printable but spaces.
_USERNAME = re.compile(r"[^\s\x00-\x1f\x7f]{1,128}")


def validate_username(username: str | None) -> str:
    if not username:
        raise MissingParameter("username")
    if not _USERNAME.fullmatch(username):
        raise InvalidInput(
            "username must be 1 to 128 printable characters without spaces", "username"
        )
    return username


def validate_time_zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown IANA time zone {name!r}", "timezone") from None
    return name


def validate_password(password: str | None) -> str:
    if not password:
        raise MissingParameter("password")
    return password


class Accounts:
    """Create and change accounts and the numbers they own."""

    def __init__(
        self,
        store: Store,
        *,
        default_time_zone: str,
        default_region: str = "",
        clock: Clock = now_ms,
    ) -> None:
        self.store = store
        self.default_time_zone = default_time_zone
        # Numbers are read in an account's own region, else in this one ("" for none).
        self.default_region = default_region
        self.clock = clock

    async def add(
        self,
        username: str,
        password: str,
        *,
        msisdns: tuple[str, ...] = (),
        time_zone: str | None = None,
        reseller: str | None = None,
        status: AccountStatus = AccountStatus.ACTIVE,
        region: str | None = None,
    ) -> Account:
        """Create an account; its numbers are read in `region` (an ISO 3166 code such as
        GB; None: the default region), which is kept for reading its users' numbers."""
        validate_username(username)
        validate_password(password)
        zone = validate_time_zone(time_zone or self.default_time_zone)
        own_region = validate_region(region)
        reading = own_region or self.default_region
        numbers = tuple(dict.fromkeys(normalize_msisdn(n, region=reading) for n in msisdns))
        return await self.store.create_account(
            username=username,
            password_hash=await hash_password(password),
            status=status,
            time_zone=zone,
            reseller=reseller or None,
            msisdns=numbers,
            now=self.clock(),
            region=own_region,
        )

    async def set_region(self, username: str, region: str | None) -> str | None:
        """Read the account's numbers in `region` (an ISO 3166 code such as GB) from now on;
        None or "" goes back to the default region. The region stored (None: the default).

        Numbers already stored stay as they are: they are E.164 whatever the region.
        """
        own_region = validate_region(region)
        await self.store.set_account_region(username, own_region)
        return own_region

    async def block(self, username: str) -> None:
        await self.store.set_account_status(username, AccountStatus.BLOCKED)

    async def unblock(self, username: str) -> None:
        await self.store.set_account_status(
            username, AccountStatus.ACTIVE, only_from=AccountStatus.BLOCKED
        )

    async def activate(self, username: str) -> None:
        await self.store.set_account_status(
            username, AccountStatus.ACTIVE, only_from=AccountStatus.NEEDS_ACTIVATION
        )

    async def change_password(self, username: str, password: str) -> None:
        validate_password(password)
        await self.store.set_password(username, await hash_password(password), self.clock())

    async def add_number(self, msisdn: str, username: str) -> str:
        """Give the number, read in the account's region, to the account: as stored."""
        account = await self.store.get_account(username)
        if account is None:
            raise NotFound(f"no account named {username!r}")
        number = normalize_msisdn(msisdn, region=account.region or self.default_region)
        await self.store.add_number(number, username, self.clock())
        return number

    async def remove_number(self, msisdn: str, *, owner: str | None = None) -> str:
        """Take the number away; with `owner`, only if that account has it (the number read
        in its region, else in the default region)."""
        account = None if owner is None else await self.store.get_account(owner)
        region = account.region if account is not None else None
        number = normalize_msisdn(msisdn, region=region or self.default_region)
        if owner is not None:
            holder = await self.store.find_account_by_number(number)
            if account is None or holder != account.id:
                raise NotFound(f"{owner} has no number {number}")
        await self.store.remove_number(number)
        return number
