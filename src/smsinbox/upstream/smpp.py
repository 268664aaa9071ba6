"""What SMSC binds deliver, stored through the one ingest path every upstream takes.

Every deliver_sm and data_sm is answered only once what it carries is durably stored: a
whole message committed, or a part of a long one kept. ESME_ROK is never sent for anything
not stored; while the store is unavailable the answer is ESME_RX_T_APPN, and the SMSC
delivers again later.

A long message is stored once its last missing part is kept. Its upstream id is made of
what tells its parts apart and when the first of them arrived, so the message stored
again (two parts kept at once and both readers finding it whole, or a crash between the
message's commit and marking its parts assembled) is a duplicate, not a second copy.
After `smpp_reassembly_timeout` the parts present are stored as the message, with the
missing ones named in the log: never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import zlib
from collections.abc import Callable

from smsinbox.core.clock import now_ms
from smsinbox.core.encodings import readable, storable
from smsinbox.core.ingest import Ingestor
from smsinbox.core.numbers import normalize_msisdn, normalize_sender
from smsinbox.core.tokens import digest, new_secret
from smsinbox.errors import InvalidInput, StoreUnavailable
from smsinbox.metrics import Metrics
from smsinbox.models import Encoding, InboundMessage, SmppBind, SmppPart
from smsinbox.smpp import coding, messages
from smsinbox.smpp.bind import Bind, BindSettings, Mode, State
from smsinbox.smpp.coding import Alphabet
from smsinbox.smpp.pdu import Pdu, Status
from smsinbox.store import Store
from smsinbox.store.smpp import PartKey
from smsinbox.upstream.sender import SmppSender

log = logging.getLogger("smsinbox.smpp")

# A receipt about no part sent (yet) is kept this long for its part to be recorded.
EARLY_RECEIPTS_KEPT_MS = 86_400_000


class SmppInbound:
    """The receiver of every bind: turns its deliveries into stored messages."""

    def __init__(
        self,
        store: Store,
        ingestor: Ingestor,
        *,
        reassembly_timeout_s: float,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.ingestor = ingestor
        self.reassembly_timeout_ms = int(reassembly_timeout_s * 1000)
        self.clock = clock
        self.binds: dict[str, SmppBind] = {}
        self.on_receipt: Callable[[str, str], None] = lambda bind, state: None

    async def receive(self, bind_name: str, pdu: Pdu) -> Status:
        """The command_status to answer a deliver_sm or data_sm with, once it is stored."""
        bind = self.binds[bind_name]
        try:
            return await self._receive(bind, pdu)
        except StoreUnavailable:
            return Status.ESME_RX_T_APPN

    async def _receive(self, bind: SmppBind, pdu: Pdu) -> Status:
        try:
            carried = messages.read(
                pdu, default_alphabet=Alphabet(bind.default_alphabet), packed=bind.gsm_packed
            )
        except messages.Unreadable as error:
            # Kept as the octets that came rather than refused: the SMSC has accepted it
            # from its sender, and a refusal would lose it.
            log.warning("bind %s: user data header unreadable (%s); kept as 8bit", bind.name, error)
            carried = messages.ShortMessage(
                pdu.text("source_addr"), pdu.text("destination_addr"), Alphabet.BINARY,
                pdu.octets("short_message"), None,
            )  # fmt: skip
        if isinstance(carried, messages.Receipt):
            state = carried.state.name.lower()
            self.on_receipt(bind.name, state)
            await self.store.record_receipt(
                carried.message_id, state, carried.error, now=self.clock()
            )
            return Status.ESME_ROK
        # Read as every upstream's numbers are: in the default region.
        region = self.ingestor.region
        try:
            sender = normalize_sender(carried.source, "source_addr", region=region)
        except InvalidInput:
            return Status.ESME_RINVSRCADR
        try:
            recipient = normalize_msisdn(carried.destination, "destination_addr", region=region)
        except InvalidInput:
            return Status.ESME_RINVDSTADR
        part = carried.part
        if part is None or part.total == 1:
            text = coding.text(carried.alphabet, carried.units)
            await self._store(bind, sender, recipient, carried.alphabet, text, carried.units)
            return Status.ESME_ROK
        key: PartKey = (bind.id, sender, recipient, part.reference, part.total)
        kept = SmppPart(part.sequence, carried.alphabet.value, carried.units, self.clock())
        if await self.store.keep_smpp_part(key, kept):
            return Status.ESME_ROK  # delivered again after its message was stored
        parts = await self.store.smpp_message_parts(key)
        if {found.sequence for found in parts} >= set(range(1, part.total + 1)):
            await self._store_long(bind, key, parts)
        return Status.ESME_ROK

    async def _store_long(self, bind: SmppBind, key: PartKey, parts: list[SmppPart]) -> None:
        """Store the message of `parts` (whole, or all there will be) and mark them."""
        _, sender, recipient, reference, total = key
        assembled = messages.assemble(
            [(found.sequence, Alphabet(found.alphabet), found.units) for found in parts], total
        )
        if not assembled.complete:
            log.warning("bind %s: message %d from %s to %s stored without parts %s", bind.name,
                        reference, sender, recipient, assembled.missing)  # fmt: skip
        first = min(found.received_at for found in parts)
        # What tells this message from another reusing its reference, the same each time
        # the same parts are stored.
        content = zlib.crc32(assembled.octets)
        upstream_message_id = f"{sender}>{recipient}#{reference}/{total}@{first}:{content:08x}"
        await self._store(bind, sender, recipient, assembled.alphabet, assembled.text,
                          assembled.octets, upstream_message_id)  # fmt: skip
        await self.store.mark_smpp_parts_assembled(key, now=self.clock())

    async def _store(
        self,
        bind: SmppBind,
        sender: str,
        recipient: str,
        alphabet: Alphabet,
        text: str,
        units: bytes,
        upstream_message_id: str | None = None,
    ) -> None:
        encoding = coding.encoding(alphabet)
        body: bytes | None = units
        if encoding is Encoding.BINARY:
            text = readable(units)
        else:
            text, body = storable(text, units)
        await self.ingestor.ingest(
            InboundMessage(
                sender=sender,
                recipient=recipient,
                text=text,
                encoding=encoding,
                body=body,
                upstream_id=bind.upstream_id,
                upstream_message_id=upstream_message_id,
            )
        )

    async def sweep(self) -> None:
        """Store the long messages waiting past the timeout with the parts they have."""
        now = self.clock()
        binds = {bind.id: bind for bind in self.binds.values()}
        for key in await self.store.waiting_smpp_messages(
            received_before=now - self.reassembly_timeout_ms
        ):
            bind = binds.get(key[0])
            if bind is None:
                continue  # a bind not running here: the process that runs it stores it
            await self._store_long(bind, key, await self.store.smpp_message_parts(key))
        # Parts of stored messages are kept as long again, for late redeliveries.
        await self.store.purge_smpp_parts(assembled_before=now - self.reassembly_timeout_ms)
        await self.store.purge_early_receipts(received_before=now - EARLY_RECEIPTS_KEPT_MS)


class SmppBinds:
    """The binds configured in the store, kept running in this process: started, stopped
    and restarted as the operator adds, disables, changes or removes them (read again every
    `refresh_s`), each one's state recorded for `smsinbox smpp list` and the metrics."""

    def __init__(
        self,
        store: Store,
        inbound: SmppInbound,
        metrics: Metrics,
        *,
        refresh_s: float = 5.0,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.inbound = inbound
        self.metrics = metrics
        self.refresh_s = refresh_s
        self.clock = clock
        self.running: dict[str, tuple[SmppBind, Bind]] = {}
        self._recording: set[asyncio.Task[None]] = set()
        self._record_turn = asyncio.Lock()
        self.sender = SmppSender(store, lambda: list(self.running.values()), metrics, clock=clock)
        inbound.on_receipt = lambda bind, state: metrics.smpp_receipts.labels(bind, state).inc()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the configured binds running until `stop`, send the queued messages over
        them, and store the long messages waiting past their time; then unbind them all
        (once what was submitted has its answer)."""
        sending = asyncio.create_task(self.sender.run(stop), name="smpp sender")
        try:
            while not stop.is_set():
                try:
                    await self.reconcile()
                    await self.inbound.sweep()
                except StoreUnavailable:
                    log.warning("SMPP binds not read again: store unavailable")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.refresh_s)
        finally:
            await sending
            await asyncio.gather(*(bind.stop() for _, bind in self.running.values()))
            self.running.clear()
            if self._recording:
                await asyncio.wait(set(self._recording))

    async def reconcile(self) -> None:
        """Start what is configured and enabled, stop what is not (or has changed)."""
        wanted = {bind.name: bind for bind in await self.store.list_smpp_binds() if bind.enabled}
        for name, (configured, bind) in list(self.running.items()):
            if _settings(wanted.get(name)) != _settings(configured):
                await bind.stop()
                del self.running[name]
                self.metrics.smpp_bound.labels(name).set(0)
        self.inbound.binds = wanted
        for name, configured in wanted.items():
            if name in self.running:
                # What changes without binding again (routes, throughput) applies at once.
                self.running[name] = (configured, self.running[name][1])
            else:
                bind = Bind(bind_settings(configured), self._receive, on_state=self._state_changed)
                self.running[name] = (configured, bind)
                bind.start()

    async def _receive(self, bind_name: str, pdu: Pdu) -> Status:
        status = await self.inbound.receive(bind_name, pdu)
        self.metrics.smpp_deliveries.labels(bind_name, status.name).inc()
        return status

    def _state_changed(self, bind: Bind) -> None:
        name = bind.settings.name
        self.metrics.smpp_bound.labels(name).set(1 if bind.state is State.BOUND else 0)
        entry = self.running.get(name)
        if entry is None:
            return
        recording = asyncio.create_task(self._record(entry[0].id, bind))
        self._recording.add(recording)
        recording.add_done_callback(self._recording.discard)

    async def _record(self, bind_id: int, bind: Bind) -> None:
        """Record the bind's state as it is when this write's turn comes: the writes take
        turns, so the last one holds the latest state (two at once on PostgreSQL could
        commit in either order, and `binding` outlive the `bound` after it)."""
        async with self._record_turn:
            try:
                await self.store.record_smpp_bind_state(
                    bind_id, bind.state.value, bind.last_error, now=self.clock()
                )
            except StoreUnavailable:
                log.warning("SMPP bind state not recorded: store unavailable")

    async def add(self, bind: SmppBind) -> SmppBind:
        """Configure a new bind (InvalidInput for settings an SMSC would refuse); the
        running server binds within `refresh_s`."""
        _check(bind)
        return await self.store.add_smpp_bind(
            bind, token_hash=digest(new_secret("smpp_")), now=self.clock()
        )

    async def remove(self, name: str) -> None:
        await self.store.remove_smpp_bind(name, now=self.clock())

    async def set_routes(self, name: str, routes: str) -> None:
        """Change the recipient prefixes a bind sends to (InvalidInput if not prefixes)."""
        bind = await self.store.get_smpp_bind(name)
        _check(dataclasses.replace(bind, routes=routes))
        await self.store.set_smpp_bind_routes(name, routes)

    async def set_enabled(self, name: str, enabled: bool) -> None:
        await self.store.set_smpp_bind_enabled(name, enabled)

    async def configured(self) -> list[SmppBind]:
        return await self.store.list_smpp_binds()

    async def get(self, name: str) -> SmppBind:
        return await self.store.get_smpp_bind(name)

    def states(self) -> dict[str, tuple[State, str]]:
        """Each running bind's state and last error."""
        return {name: (bind.state, bind.last_error) for name, (_, bind) in self.running.items()}


def _settings(bind: SmppBind | None) -> tuple[object, ...] | None:
    """What a bind is run with: a change to it means binding again."""
    if bind is None:
        return None
    return (*dataclasses.astuple(bind_settings(bind)), bind.default_alphabet, bind.gsm_packed)


def bind_settings(bind: SmppBind) -> BindSettings:
    return BindSettings(
        name=bind.name,
        host=bind.host,
        port=bind.port,
        system_id=bind.system_id,
        password=bind.password,
        system_type=bind.system_type,
        mode=Mode(bind.mode),
        address_range=bind.address_range,
        tls=bind.tls,
        window=bind.window,
        enquire_link_s=bind.enquire_link_s,
    )


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ROUTE = re.compile(r"\*|[0-9]{1,15}")


def _check(bind: SmppBind) -> None:
    """Refuse settings no SMSC could bind with, naming the field."""
    checks = [
        (_NAME.fullmatch(bind.name) is not None, "name",
         "1 to 64 letters, digits and . _ -, starting with a letter or digit"),
        (bool(bind.host) and len(bind.host) <= 255, "host", "a host name or address"),
        (0 < bind.port < 65536, "port", "between 1 and 65535"),
        (0 < len(bind.system_id) <= 15, "system_id", "1 to 15 characters"),
        (len(bind.password) <= 8, "password", "at most 8 characters (SMPP 3.4)"),
        (len(bind.system_type) <= 12, "system_type", "at most 12 characters"),
        (len(bind.address_range) <= 40, "address_range", "at most 40 characters"),
        (bind.mode in {mode.value for mode in Mode}, "mode",
         "receiver, transmitter or transceiver"),
        (1 <= bind.window <= 1000, "window", "between 1 and 1000"),
        (bind.throughput >= 0, "throughput", "0 (no limit of ours) or more"),
        (len(bind.routes) <= 255 and all(_ROUTE.fullmatch(route) for route in bind.routes.split()),
         "routes", "number prefixes (digits) or *, space-separated"),
        (1 <= bind.enquire_link_s <= 3600, "enquire_link_s", "between 1 and 3600 seconds"),
        (bind.default_alphabet in {"gsm", "latin1", "ascii"}, "default_alphabet",
         "gsm, latin1 or ascii"),
    ]  # fmt: skip
    for ok, field, expected in checks:
        if not ok:
            raise InvalidInput(f"{field} must be {expected}", field)
    for field in ("system_id", "password", "system_type", "address_range"):
        value = getattr(bind, field)
        if not (value.isascii() and value.isprintable()):
            raise InvalidInput(f"{field} must be printable ASCII", field)
