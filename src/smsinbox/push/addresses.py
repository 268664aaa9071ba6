"""Refusing push URLs that point inside the operator's network (SSRF protection)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

# Carrier-grade NAT (RFC 6598): not "private" to the ipaddress module, yet internal.
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")


class RefusedAddress(ValueError):
    """The URL is not an http(s) URL, or resolves to a private, loopback or link-local
    address while those are not allowed."""


class AddressPolicy:
    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private

    async def check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RefusedAddress(f"not an http(s) URL: {url}")
        if self.allow_private:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                parts.hostname,
                parts.port or (443 if parts.scheme == "https" else 80),
                type=socket.SOCK_STREAM,
            )
        except OSError as error:
            raise RefusedAddress(f"cannot resolve {parts.hostname}: {error}") from None
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
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
                    f"{parts.hostname} resolves to {address}, a private address "
                    "(allow with SMSINBOX_PUSH_ALLOW_PRIVATE=true)"
                )
