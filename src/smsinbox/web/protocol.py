"""uvicorn's HTTP protocol, with each answer's head and body sent in one write.

uvicorn writes an answer's status line and headers when the application sends
`http.response.start`, and its body when it sends `http.response.body`: two writes, so two
`send` system calls and two TCP segments for every answer with a body, where the same
bytes fit in one. On loopback a `send` costs the sender the receiver's side of TCP too;
under load the second write was a sixth of the CPU of a whole `/healthz` request.

So the connection's transport holds a write until the next one and sends both together
(one vectored write); a held write goes out at once when the answer is complete (an empty
body is never written), and otherwise (the head of a streamed answer, a `100 Continue`)
when the event loop comes round, which is before it waits for anything. Everything else
about the connection is uvicorn's own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _HeldWrites:
    """A transport that joins each write to the one after it (see the module)."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        held = self._held
        if held is None:
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            self._transport.writelines((held, data))

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:  # on every answer: not through __getattr__
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:
        # Reading, closing state, peer addresses: the transport's own.
        return getattr(self._transport, name)


class JoinedWritesProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose answers go out in one write each."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Flow control (FlowControl, built above) keeps the real transport: pausing and
        # resuming reads is not a write.
        self.transport = self._writes = _HeldWrites(transport, self.loop)  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        self._writes.flush()  # an answer with an empty body: its head alone
        super().on_response_complete()
