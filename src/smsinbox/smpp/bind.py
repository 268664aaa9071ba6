"""A bind to an SMSC, kept up: connect, bind, keep the link alive, answer what the SMSC
sends, and on any loss connect again after a capped exponential backoff with jitter.

What a deliver_sm or data_sm means is the `Receiver`'s business: the bind only answers
with the status the receiver gives, once the receiver has returned (so ESME_ROK goes out
only after the message, or the part, is durably stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import random
import ssl
from collections.abc import Awaitable, Callable

from smsinbox.smpp.pdu import Command, Pdu, Status
from smsinbox.smpp.session import ResponseTimeout, Session, SessionClosed

log = logging.getLogger("smsinbox.smpp")

INTERFACE_VERSION = 0x34
# Reconnection backoff: the first wait, the longest, and the share of each that is random.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
BACKOFF_JITTER = 0.5
CONNECT_TIMEOUT_S = 10.0
UNBIND_TIMEOUT_S = 5.0


class Mode(enum.StrEnum):
    RECEIVER = "receiver"
    TRANSMITTER = "transmitter"
    TRANSCEIVER = "transceiver"

    @property
    def command(self) -> Command:
        return {
            Mode.RECEIVER: Command.BIND_RECEIVER,
            Mode.TRANSMITTER: Command.BIND_TRANSMITTER,
            Mode.TRANSCEIVER: Command.BIND_TRANSCEIVER,
        }[self]

    @property
    def receives(self) -> bool:
        return self is not Mode.TRANSMITTER

    @property
    def sends(self) -> bool:
        return self is not Mode.RECEIVER


class State(enum.StrEnum):
    BINDING = "binding"
    BOUND = "bound"
    BACKING_OFF = "backing off"
    STOPPED = "stopped"


@dataclasses.dataclass(frozen=True, slots=True)
class BindSettings:
    """How to reach and bind to one SMSC."""

    name: str
    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""
    mode: Mode = Mode.TRANSCEIVER
    address_range: str = ""
    tls: bool = False
    window: int = 10  # our requests in flight at once
    enquire_link_s: float = 30.0
    response_timeout_s: float = 30.0


# The receiver of what the SMSC delivers: the bind's name and the deliver_sm or data_sm,
# answered with the command_status to send back.
Receiver = Callable[[str, Pdu], Awaitable[Status]]


class Bind:
    """One SMSC bind and its state, reconnecting until `stop`."""

    def __init__(
        self,
        settings: BindSettings,
        receiver: Receiver,
        *,
        on_state: Callable[[Bind], None] | None = None,
    ) -> None:
        self.settings = settings
        self._receiver = receiver
        self._on_state = on_state or (lambda bind: None)
        self.state = State.STOPPED
        self.last_error = ""
        self._session: Session | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._keep_bound(), name=f"smpp bind {self.settings.name}")

    async def stop(self) -> None:
        """Unbind cleanly and stop: the deliveries in hand are stored and answered first,
        and any that arrive meanwhile are refused for now (the SMSC delivers them again,
        here after a restart or on another bind)."""
        self._stopping.set()
        session = self._session
        if session is not None and self.state is State.BOUND:
            await session.finish_handling()
            with contextlib.suppress(SessionClosed, ResponseTimeout, ConnectionError):
                await asyncio.wait_for(session.request(Pdu(Command.UNBIND, 0)), UNBIND_TIMEOUT_S)
            await session.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._set_state(State.STOPPED)

    async def request(self, pdu: Pdu) -> Pdu:
        """Send a request (a submit_sm) on the bound session and wait for its answer;
        NotBound while there is none, SessionClosed or ResponseTimeout if it is lost."""
        session = self._session
        if session is None or self.state is not State.BOUND or self._stopping.is_set():
            raise NotBound(f"bind {self.settings.name} is {self.state.value}")
        return await session.request(pdu)

    def _set_state(self, state: State, error: str = "") -> None:
        self.state = state
        if error:
            self.last_error = error
        self._on_state(self)

    async def _keep_bound(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._set_state(State.BINDING)
            try:
                await self._bind_and_serve()
                error = "the SMSC closed the session"
            except _BindRefused as refused:
                error = str(refused)
            except (OSError, SessionClosed, ResponseTimeout, TimeoutError) as lost:
                error = f"{type(lost).__name__}: {lost}" if str(lost) else type(lost).__name__
            # A bind that was made starts the backoff afresh; failures in a row lengthen it.
            failures = 1 if self.state is State.BOUND else failures + 1
            if self._stopping.is_set():
                return
            wait = backoff(failures)
            log.warning("bind %s: %s; binding again in %.1f s", self.settings.name, error, wait)
            self._set_state(State.BACKING_OFF, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)

    async def _bind_and_serve(self) -> None:
        settings = self.settings
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                settings.host,
                settings.port,
                ssl=ssl.create_default_context() if settings.tls else None,
            ),
            CONNECT_TIMEOUT_S,
        )
        session = Session(
            reader,
            writer,
            self._answer,
            window=settings.window,
            response_timeout=settings.response_timeout_s,
        )
        self._session = session
        reading = asyncio.create_task(session.run())
        try:
            answer = await session.request(
                Pdu(
                    settings.mode.command,
                    0,
                    params={
                        "system_id": settings.system_id,
                        "password": settings.password,
                        "system_type": settings.system_type,
                        "interface_version": INTERFACE_VERSION,
                        "address_range": settings.address_range,
                    },
                )
            )
            if answer.status != Status.ESME_ROK:
                raise _BindRefused(answer.status)
            log.info("bind %s: bound to %s", settings.name, answer.text("system_id") or "SMSC")
            self._set_state(State.BOUND)
            await self._keep_alive(session, reading)
        finally:
            self._session = None
            await session.close()
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading

    async def _keep_alive(self, session: Session, reading: asyncio.Task[None]) -> None:
        """enquire_link whenever the SMSC has been quiet for the interval; return when the
        session ends (or raise when the SMSC stops answering)."""
        interval = self.settings.enquire_link_s
        while not reading.done():
            quiet = asyncio.get_running_loop().time() - session.last_read
            if quiet >= interval:
                await session.request(Pdu(Command.ENQUIRE_LINK, 0))
                continue
            await asyncio.wait({reading}, timeout=interval - quiet)

    async def _answer(self, request: Pdu) -> Pdu | None:
        """The answer to a request from the SMSC."""
        command = request.command
        if command is Command.ENQUIRE_LINK:
            return request.response()
        if command is Command.UNBIND:
            # The deliveries in hand are answered first; then the session ends, and the
            # bind is made again after the backoff.
            session = self._session
            if session is not None:
                await session.finish_handling()
                session.send(request.response())
                await session.close()
            return None
        if command in (Command.DELIVER_SM, Command.DATA_SM):
            if not self.settings.mode.receives:
                return request.response(Status.ESME_RINVBNDSTS)
            if self._stopping.is_set():
                return request.response(Status.ESME_RX_T_APPN)
            status = await self._receiver(self.settings.name, request)
            return request.response(status, message_id="")
        if command in (Command.ALERT_NOTIFICATION, Command.OUTBIND):
            return None  # neither has a response
        return Pdu(Command.GENERIC_NACK, request.sequence, Status.ESME_RINVCMDID)


class NotBound(ConnectionError):
    """The bind has no bound session to send on (binding, backing off or stopping)."""


class _BindRefused(Exception):
    def __init__(self, status: int) -> None:
        try:
            name = Status(status).name
        except ValueError:
            name = f"{status:#x}"
        super().__init__(f"bind refused: {name}")


def backoff(failures: int) -> float:
    """Seconds to wait after `failures` failed attempts in a row: doubling from the first
    wait up to the longest, each less a random share so binds do not retry in step."""
    ceiling = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * float(2 ** max(0, failures - 1)))
    return ceiling * (1 - BACKOFF_JITTER * random.random())
