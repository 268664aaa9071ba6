"""Refusing push URLs that point inside the operator's network (SSRF protection), and the
addresses a push connection may be opened to."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

# Carrier-grade NAT (RFC 6598): not "private" to the ipaddress module, yet internal.
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")

# Looks a host name up: its addresses, as text, in the order to try them; OSError when it
# has none.
Resolver = Callable[[str], Awaitable[Sequence[str]]]


async def system_resolver(host: str) -> list[str]:
    """The addresses the system's resolver (DNS, /etc/hosts) gives `host`."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class RefusedAddress(ValueError):
    """The URL is not an http(s) URL, or resolves to a private, loopback or link-local
    address while those are not allowed."""


class AddressPolicy:
    """Which addresses pushes may go to.

    A URL is checked when its endpoint is added. The worker's client then looks its host
    up once for every connection it opens (`resolve`), and connects to the addresses that
    lookup gave and this policy allowed, never to the name: a name whose answers change
    from one lookup to the next (DNS rebinding) cannot lead a push to an address that was
    not checked.
    """

    def __init__(self, *, allow_private: bool, resolver: Resolver = system_resolver) -> None:
        self.allow_private = allow_private
        # The one lookup that the check and the connection share; replaceable, so that tests
        # can answer as a rebinding name server would.
        self.resolver = resolver

    async def check(self, url: str) -> None:
        """Refuse `url` (RefusedAddress) unless it is http(s) and its host resolves to
        allowed addresses only (not looked up at all while private ones are allowed)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RefusedAddress(f"not an http(s) URL: {url}")
        if not self.allow_private:
            await self.resolve(parts.hostname)

    async def resolve(self, host: str) -> list[str]:
        """The addresses `host` resolves to, each of them allowed: those a connection to it
        may be opened to. Raises RefusedAddress when it does not resolve, or when any one
        of its addresses is not allowed."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            try:
                addresses = list(dict.fromkeys(await self.resolver(host)))
            except OSError as error:
                raise RefusedAddress(f"cannot resolve {host}: {error}") from None
        else:
            addresses = [host]  # an address in the URL needs no lookup
        if not addresses:
            raise RefusedAddress(f"cannot resolve {host}: no address")
        if self.allow_private:
            return addresses
        for text in addresses:
            # All or nothing: a name that answers a public address beside an internal one
            # is not trusted with either, and a failed connection to the first must not
            # fall back to the next.
            address = ipaddress.ip_address(text)
            if (
                address in _SHARED_ADDRESS_SPACE
                or address.is_private
                or address.is_loopback
                or address.is_link_local
                or address.is_multicast
                or address.is_reserved
                or address.is_unspecified
            ):
                raise RefusedAddress(
                    f"{host} resolves to {address}, a private address "
                    "(allow with SMSINBOX_PUSH_ALLOW_PRIVATE=true)"
                )
        return addresses
