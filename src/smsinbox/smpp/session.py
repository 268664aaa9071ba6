"""One SMPP session on an asyncio stream: PDUs read and written, requests matched to their
responses by sequence number, and the peer's requests answered as their handler finishes.

The session knows no bind state and no business: `Handler` decides what a request means
and what to answer. Each request from the peer runs in its own task, so a deliver_sm
waiting for its commit does not hold up the next one (the peer's window decides how many
are in flight); the answers go out in whatever order they are ready, which SMPP allows.
Our own requests wait for a place in `window` before they are sent.

A PDU that cannot be read is answered with generic_nack and the status that says why. A
length that no PDU can have leaves the stream unreadable from there on: the session sends
generic_nack and ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable

from smsinbox.smpp import pdu as smpp
from smsinbox.smpp.pdu import Command, DecodeError, Pdu, Status

log = logging.getLogger("smsinbox.smpp")

Handler = Callable[[Pdu], Awaitable[Pdu | None]]  # a request -> its response (None: none)


class SessionClosed(ConnectionError):
    """The session ended (the peer closed it, or it was closed) before an answer came."""


class ResponseTimeout(TimeoutError):
    """The peer did not answer a request in time."""


class Session:
    """A PDU stream with a peer, and the requests in flight on it."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handler: Handler,
        *,
        window: int = 10,
        response_timeout: float = 30.0,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._handler = handler
        self._window = asyncio.Semaphore(window)
        self._response_timeout = response_timeout
        self._sequences = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Pdu]] = {}
        self._handling: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()
        self._outgoing: list[bytes] = []
        self.last_read = asyncio.get_running_loop().time()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _next_sequence(self) -> int:
        sequence = next(self._sequences)
        if sequence > smpp.MAX_SEQUENCE:  # wraps after two billion requests
            self._sequences = itertools.count(2)
            sequence = 1
        return sequence

    async def request(self, pdu: Pdu) -> Pdu:
        """Send a request (its sequence number assigned here) and wait for its response."""
        async with self._window:
            if self.closed:
                raise SessionClosed("session closed")
            pdu.sequence = self._next_sequence()
            answer: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
            self._waiting[pdu.sequence] = answer
            try:
                self.send(pdu)
                return await asyncio.wait_for(answer, self._response_timeout)
            except TimeoutError:
                raise ResponseTimeout(f"no answer to {pdu.command.name}") from None
            finally:
                self._waiting.pop(pdu.sequence, None)

    def send(self, pdu: Pdu) -> None:
        """Write one PDU (a response, or a request whose answer nobody waits for).

        PDUs sent in one turn of the event loop go out in one write: a commit answers a
        whole window of deliveries at once, and a system call each cost more than the
        answers themselves."""
        if self.closed:
            return
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing.append(smpp.encode(pdu))

    def _flush(self) -> None:
        if self._outgoing and not self.closed:
            self._writer.write(b"".join(self._outgoing))
        self._outgoing.clear()

    async def run(self) -> None:
        """Read PDUs until the peer closes the stream or `close` is called."""
        try:
            while not self.closed:
                try:
                    header = await self._reader.readexactly(smpp.HEADER.size)
                    length, _, _, sequence = smpp.read_header(header)
                    body = await self._reader.readexactly(length - smpp.HEADER.size)
                except DecodeError as error:
                    # Where the next PDU starts is unknown: answer, then give up the stream.
                    log.warning("unreadable PDU stream: %s", error.detail)
                    self.send(Pdu(Command.GENERIC_NACK, 0, error.status))
                    return
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.last_read = asyncio.get_running_loop().time()
                try:
                    received = smpp.decode(header + body)
                except DecodeError as error:
                    log.warning("unreadable PDU: %s", error.detail)
                    self.send(Pdu(Command.GENERIC_NACK, sequence, error.status))
                    continue
                self._dispatch(received)
        finally:
            await self.close()

    def _dispatch(self, received: Pdu) -> None:
        if received.command.is_response:
            answer = self._waiting.get(received.sequence)
            if answer is not None and not answer.done():
                answer.set_result(received)
            elif received.command is not Command.GENERIC_NACK:
                log.info("answer to no request: %s %d", received.command.name, received.sequence)
            return
        task = asyncio.create_task(self._answer(received))
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)

    async def _answer(self, request: Pdu) -> None:
        try:
            response = await self._handler(request)
        except Exception:
            log.exception("handling %s failed", request.command.name)
            # The peer keeps what it sent and may try again.
            response = request.response(Status.ESME_RSYSERR)
        if response is not None:
            self.send(response)

    async def close(self) -> None:
        """End the session: requests waiting fail with SessionClosed, the stream closes."""
        if self.closed:
            return
        self._flush()  # what was answered before the close still goes out
        self._closed.set()
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_exception(SessionClosed("session closed"))
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()

    async def finish_handling(self) -> None:
        """Wait for the peer's other requests being handled (the caller may be handling
        one itself: an unbind answered once the deliveries before it are)."""
        others = self._handling - {asyncio.current_task()}
        if others:
            await asyncio.wait(others)
