"""A bind to an SMSC: bound, answering deliveries only as the receiver decides, alive, bound
again after a loss, unbound on stop. The SMSC is smpp34's server (an independent SMPP
implementation) on loopback; faults no real SMSC shows on demand come from a scripted peer
speaking raw PDUs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import smpp34

from smsinbox.models import SmppBind
from smsinbox.services import Services
from smsinbox.smpp import pdu as smpp
from smsinbox.smpp.bind import Bind, BindSettings, Mode, State
from smsinbox.smpp.pdu import Command, Pdu, Status
from tests.conftest import free_port

Receiver = Callable[[str, Pdu], Awaitable[Status]]


def settings(port: int, **changes: object) -> BindSettings:
    values: dict[str, object] = {
        "name": "carrier",
        "host": "127.0.0.1",
        "port": port,
        "system_id": "esme",
        "password": "secret",
    }
    values.update(changes)
    return BindSettings(**values)  # type: ignore[arg-type]


async def accepting(name: str, pdu: Pdu) -> Status:
    return Status.ESME_ROK


async def bound(bind: Bind, timeout: float = 10) -> None:
    async def wait() -> None:
        while bind.state is not State.BOUND:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(wait(), timeout)


async def smsc_with_port() -> tuple[smpp34.Server, int]:
    port = free_port()
    server = smpp34.Server("127.0.0.1", port, system_id="SMSC")
    await server.start()
    return server, port


async def test_a_delivery_is_answered_with_the_receivers_status() -> None:
    server, port = await smsc_with_port()
    received: list[Pdu] = []

    async def receiver(name: str, pdu: Pdu) -> Status:
        received.append(pdu)
        return Status.ESME_ROK if len(received) == 1 else Status.ESME_RX_T_APPN

    bind = Bind(settings(port), receiver)
    bind.start()
    try:
        esme = await asyncio.wait_for(server.next(), 10)
        assert isinstance(esme, smpp34.Esme) and esme.system_id == "esme"
        first = await esme.deliver_sm("447700900001", b"hello", source_addr="447700900123")
        second = await esme.deliver_sm("447700900001", b"again", source_addr="447700900123")
        assert first.is_success
        assert second.command_status == Status.ESME_RX_T_APPN  # the SMSC keeps it, retries
        assert [pdu.octets("short_message") for pdu in received] == [b"hello", b"again"]
        assert received[0].text("source_addr") == "447700900123"
        assert bind.state is State.BOUND and bind.settings.name == "carrier"
    finally:
        await bind.stop()
        await server.stop()


async def test_the_answer_waits_until_the_receiver_has_finished() -> None:
    server, port = await smsc_with_port()
    stored = asyncio.Event()

    async def receiver(name: str, pdu: Pdu) -> Status:
        await stored.wait()  # as the commit of the message would be
        return Status.ESME_ROK

    bind = Bind(settings(port), receiver)
    bind.start()
    try:
        esme = await asyncio.wait_for(server.next(), 10)
        answer = asyncio.ensure_future(esme.deliver_sm("447700900001", b"hi"))
        done, _ = await asyncio.wait({answer}, timeout=0.5)
        assert not done
        stored.set()
        assert (await asyncio.wait_for(answer, 5)).is_success
    finally:
        await bind.stop()
        await server.stop()


async def test_stop_unbinds_and_waits_for_deliveries_in_hand() -> None:
    server, port = await smsc_with_port()
    stored = asyncio.Event()

    async def receiver(name: str, pdu: Pdu) -> Status:
        await stored.wait()
        return Status.ESME_ROK

    bind = Bind(settings(port), receiver)
    bind.start()
    try:
        esme = await asyncio.wait_for(server.next(), 10)
        assert isinstance(esme, smpp34.Esme)
        answer = asyncio.ensure_future(esme.deliver_sm("447700900001", b"hi"))
        await asyncio.sleep(0.2)
        stopping = asyncio.ensure_future(bind.stop())
        await asyncio.sleep(0.2)
        stored.set()
        await asyncio.wait_for(stopping, 10)
        assert (await asyncio.wait_for(answer, 5)).is_success
        assert isinstance(await asyncio.wait_for(server.next(), 5), smpp34.Unbound)
        assert bind.state is State.STOPPED
    finally:
        await server.stop()


# A scripted SMSC: raw PDUs for faults a real SMSC does not show on demand.


class ScriptedSmsc:
    """Accepts one ESME, answers its bind with `bind_status`, and lets the test send raw
    octets and read the PDUs that come back."""

    def __init__(self, bind_status: Status = Status.ESME_ROK) -> None:
        self.bind_status = bind_status
        self.port = free_port()
        self.received: asyncio.Queue[Pdu] = asyncio.Queue()
        self.binds = 0
        self._writer: asyncio.StreamWriter | None = None
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedSmsc:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        if self._writer is not None:
            self._writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        try:
            while True:
                header = await reader.readexactly(16)
                length = int.from_bytes(header[:4], "big")
                pdu = smpp.decode(header + await reader.readexactly(length - 16))
                if pdu.command is Command.BIND_TRANSCEIVER:
                    self.binds += 1
                    writer.write(smpp.encode(pdu.response(self.bind_status, system_id="SIM")))
                elif pdu.command is Command.UNBIND:
                    writer.write(smpp.encode(pdu.response()))
                else:
                    await self.received.put(pdu)
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    def send(self, octets: bytes) -> None:
        assert self._writer is not None
        self._writer.write(octets)

    def drop(self) -> None:
        """Close the connection without an unbind, as a network failure would."""
        assert self._writer is not None
        self._writer.close()

    async def next(self) -> Pdu:
        return await asyncio.wait_for(self.received.get(), 5)


async def test_unreadable_and_unknown_pdus_get_generic_nack_and_the_bind_stays() -> None:
    async with ScriptedSmsc() as peer:
        bind = Bind(settings(peer.port), accepting)
        bind.start()
        try:
            await bound(bind)
            bad_tlv = smpp.encode(Pdu(Command.DELIVER_SM, 41)) + b"\x04\x24\x00\x09ab"
            peer.send(len(bad_tlv).to_bytes(4, "big") + bad_tlv[4:])
            nack = await peer.next()
            assert (nack.command, nack.status, nack.sequence) == (
                Command.GENERIC_NACK,
                Status.ESME_RINVOPTPARSTREAM,
                41,
            )
            peer.send(bytes.fromhex("00000010 00000077 00000000 0000002a"))
            nack = await peer.next()
            assert (nack.status, nack.sequence) == (Status.ESME_RINVCMDID, 42)
            peer.send(smpp.encode(Pdu(Command.ENQUIRE_LINK, 43)))
            alive = await peer.next()
            assert (alive.command, alive.sequence) == (Command.ENQUIRE_LINK_RESP, 43)
            assert bind.state is State.BOUND
        finally:
            await bind.stop()


async def test_a_transmitter_bind_refuses_deliveries() -> None:
    async with ScriptedSmsc() as peer:
        received: list[Pdu] = []

        async def receiver(name: str, pdu: Pdu) -> Status:
            received.append(pdu)
            return Status.ESME_ROK

        # The scripted SMSC answers transceiver binds only; a transmitter's bind is
        # answered below by hand.
        bind = Bind(settings(peer.port, mode=Mode.TRANSMITTER), receiver)
        bind.start()
        try:
            request = await peer.next()
            assert request.command is Command.BIND_TRANSMITTER
            assert (
                request.text("password") == "secret" and request.number("interface_version") == 0x34
            )
            peer.send(smpp.encode(request.response(system_id="SIM")))
            await bound(bind)
            peer.send(smpp.encode(Pdu(Command.DELIVER_SM, 7, params={"short_message": b"x"})))
            answer = await peer.next()
            assert (answer.command, answer.status) == (
                Command.DELIVER_SM_RESP,
                Status.ESME_RINVBNDSTS,
            )
            assert received == []
        finally:
            await bind.stop()


async def test_a_refused_bind_says_why_and_tries_again_later() -> None:
    async with ScriptedSmsc(bind_status=Status.ESME_RINVPASWD) as peer:
        bind = Bind(settings(peer.port), accepting)
        bind.start()
        try:
            async with asyncio.timeout(10):
                while bind.state is not State.BACKING_OFF:
                    await asyncio.sleep(0.02)
            assert "ESME_RINVPASWD" in bind.last_error and peer.binds == 1
        finally:
            await bind.stop()


async def test_an_smsc_that_stops_answering_is_left_and_bound_again() -> None:
    async with ScriptedSmsc() as peer:
        # The scripted SMSC never answers enquire_link.
        bind = Bind(settings(peer.port, enquire_link_s=0.2, response_timeout_s=0.3), accepting)
        bind.start()
        try:
            await bound(bind)
            assert (await peer.next()).command is Command.ENQUIRE_LINK
            async with asyncio.timeout(10):
                while bind.state is not State.BACKING_OFF:
                    await asyncio.sleep(0.02)
            assert "ResponseTimeout" in bind.last_error
        finally:
            await bind.stop()


async def test_a_lost_connection_backs_off_and_binds_again() -> None:
    async with ScriptedSmsc() as peer:
        states: list[State] = []
        bind = Bind(settings(peer.port), accepting, on_state=lambda b: states.append(b.state))
        bind.start()
        try:
            await bound(bind)
            peer.drop()
            async with asyncio.timeout(10):
                while bind.state is not State.BACKING_OFF:
                    await asyncio.sleep(0.02)
            assert bind.last_error
            await bound(bind, timeout=15)
            assert peer.binds == 2
            assert states[:2] == [State.BINDING, State.BOUND] and State.BACKING_OFF in states
        finally:
            await bind.stop()


async def test_an_unbind_from_the_smsc_is_answered_and_the_bind_made_again() -> None:
    async with ScriptedSmsc() as peer:
        bind = Bind(settings(peer.port), accepting)
        bind.start()
        try:
            await bound(bind)
            peer.send(smpp.encode(Pdu(Command.UNBIND, 9)))
            answer = await peer.next()
            assert (answer.command, answer.sequence) == (Command.UNBIND_RESP, 9)
            async with asyncio.timeout(15):
                while peer.binds < 2 or bind.state is not State.BOUND:
                    await asyncio.sleep(0.02)
        finally:
            await bind.stop()


async def test_the_recorded_state_is_the_latest_even_when_a_write_is_slow(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`smpp list` reads the state the server recorded: binding, then bound. The first write
    made slow, the second must still not be overtaken by it."""
    async with ScriptedSmsc() as peer:
        await services.smpp.add(SmppBind("carrier", "127.0.0.1", peer.port, "esme", "secret"))
        record = services.store.record_smpp_bind_state
        writes: list[str] = []

        async def slow_first(bind_id: int, state: str, last_error: str, *, now: int) -> None:
            writes.append(state)
            if len(writes) == 1:
                await asyncio.sleep(0.3)
            await record(bind_id, state, last_error, now=now)

        monkeypatch.setattr(services.store, "record_smpp_bind_state", slow_first)
        stop = asyncio.Event()
        running = asyncio.create_task(services.smpp.run(stop))
        try:
            async with asyncio.timeout(10):
                while (await services.store.get_smpp_bind("carrier")).state != "bound":
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # any write still on its way has landed
            assert (await services.store.get_smpp_bind("carrier")).state == "bound"
        finally:
            stop.set()
            await running
        assert (await services.store.get_smpp_bind("carrier")).state == "stopped"
