"""Who is calling: the door a request came in by and the address it came from."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    """Where a login attempt comes from.

    `entry` names the door (mc5, eapi, mysms, inbound, admin) for metrics only; `address` is
    the client's IP as the server saw it, None when unknown (then only accounts count).
    """

    entry: str
    address: str | None = None

    @classmethod
    def of(cls, entry: str, client: tuple[str, int] | None) -> Caller:
        """The caller of an ASGI request, from its scope's `client` (host, port)."""
        return cls(entry, client[0] if client else None)


# Calls from inside the process (tests, tools) have no client address.
INTERNAL = Caller("internal")
