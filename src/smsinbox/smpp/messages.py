"""What a deliver_sm or data_sm carries: a short message (or a part of a long one) or a
delivery receipt, read from the PDU; and the parts of a long message joined again.

A long message's parts are numbered by a concatenation element in the user data header or
by the `sar_*` TLVs. They are told apart by the bind, the sender, the recipient, the
reference and the part count together: two senders may use the same reference at once.
Parts may come in any order and more than once; the first copy of each part counts.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable

from smsinbox.core import gsm
from smsinbox.smpp import coding, udh
from smsinbox.smpp.coding import Alphabet
from smsinbox.smpp.pdu import Command, Pdu, Tag

# esm_class bits 2-5: the message type. A receipt is one of these, never a message to store.
_MESSAGE_TYPE = 0x3C
_RECEIPT_TYPES = {
    0x04,  # SMSC delivery receipt
    0x08,  # SME delivery acknowledgement
    0x10,  # SME manual/user acknowledgement
    0x20,  # intermediate delivery notification
}


class MessageState(enum.IntEnum):
    """message_state (SMPP 3.4 5.2.28), and the `stat:` words of a text receipt."""

    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8

    @property
    def final(self) -> bool:
        return self not in (MessageState.ENROUTE, MessageState.ACCEPTED, MessageState.UNKNOWN)


_STAT_WORDS = {
    "ENROUTE": MessageState.ENROUTE,
    "DELIVRD": MessageState.DELIVERED,
    "EXPIRED": MessageState.EXPIRED,
    "DELETED": MessageState.DELETED,
    "UNDELIV": MessageState.UNDELIVERABLE,
    "ACCEPTD": MessageState.ACCEPTED,
    "UNKNOWN": MessageState.UNKNOWN,
    "REJECTD": MessageState.REJECTED,
}
# The text form of a receipt (SMPP 3.4 appendix B): `id:... sub:... dlvrd:... submit
# date:... done date:... stat:... err:... text:...`; fields are matched by name (SMSCs
# differ in case, order and which they send).
_RECEIPT_FIELD = re.compile(r"(id|stat|err):\s*(\S+)", re.IGNORECASE)


@dataclasses.dataclass(frozen=True, slots=True)
class Receipt:
    """A delivery receipt: the SMSC's id of the message it is about, and its state."""

    message_id: str
    state: MessageState
    error: str  # the network's or SMSC's error code, '' where none was given


@dataclasses.dataclass(frozen=True, slots=True)
class ShortMessage:
    """One short message as it came: the whole of a message, or one part of a long one."""

    source: str
    destination: str
    alphabet: Alphabet
    units: bytes  # see coding.units: joined with the other parts' before decoding
    part: udh.Part | None


class Unreadable(ValueError):
    """A short message whose user data header cannot be read."""


def read(
    pdu: Pdu, *, default_alphabet: Alphabet = Alphabet.GSM, packed: bool = False
) -> ShortMessage | Receipt:
    """The short message or receipt a deliver_sm or data_sm carries.

    The body is message_payload where that TLV is present (data_sm has nothing else),
    else short_message."""
    assert pdu.command in (Command.DELIVER_SM, Command.DATA_SM)
    esm_class = pdu.number("esm_class")
    payload = pdu.tlvs.get(Tag.MESSAGE_PAYLOAD)
    if payload is None:
        payload = pdu.octets("short_message")
    if esm_class & _MESSAGE_TYPE in _RECEIPT_TYPES:
        receipt = _receipt(pdu, payload)
        if receipt is not None:
            return receipt
    of = coding.alphabet(pdu.number("data_coding"), default_alphabet)
    part = None
    fill_bits = 0
    if esm_class & udh.UDHI:
        try:
            header, payload = udh.split(payload)
            part = udh.part(header)
        except udh.MalformedHeader as error:
            raise Unreadable(str(error)) from None
        # Packed septets start at the next septet boundary after the header.
        fill_bits = (7 - len(header) * 8 % 7) % 7
    if part is None:
        part = _sar_part(pdu)
    return ShortMessage(
        pdu.text("source_addr"),
        pdu.text("destination_addr"),
        of,
        coding.units(of, payload, packed=packed, fill_bits=fill_bits),
        part,
    )


def _sar_part(pdu: Pdu) -> udh.Part | None:
    reference = pdu.tlv_int(Tag.SAR_MSG_REF_NUM)
    total = pdu.tlv_int(Tag.SAR_TOTAL_SEGMENTS)
    sequence = pdu.tlv_int(Tag.SAR_SEGMENT_SEQNUM)
    if reference is None or total is None or sequence is None or not 0 < sequence <= total:
        return None
    return udh.Part(reference, total, sequence)


def _receipt(pdu: Pdu, payload: bytes) -> Receipt | None:
    """The receipt in the TLVs, else in the text; None if neither names a message."""
    fields = {
        name.lower(): value
        for name, value in _RECEIPT_FIELD.findall(payload.decode("latin-1", "replace"))
    }
    message_id = pdu.tlv_text(Tag.RECEIPTED_MESSAGE_ID) or fields.get("id")
    if not message_id:
        return None
    state_value = pdu.tlv_int(Tag.MESSAGE_STATE)
    if state_value is not None and state_value in MessageState._value2member_map_:
        state = MessageState(state_value)
    else:
        state = _STAT_WORDS.get(fields.get("stat", "").upper(), MessageState.UNKNOWN)
    error = fields.get("err", "")
    network_error = pdu.tlvs.get(Tag.NETWORK_ERROR_CODE)
    if not error and network_error:
        error = network_error.hex()
    return Receipt(message_id, state, error)


@dataclasses.dataclass(frozen=True, slots=True)
class Assembled:
    """A long message's text from the parts present, and whether every part was."""

    text: str
    octets: bytes  # the joined units (a binary message's body)
    alphabet: Alphabet
    complete: bool
    missing: list[int]  # part numbers never received


# Stands in a stored text where parts of it never came: what a reader sees of the gap.
MISSING = "[…]"


def assemble(parts: Iterable[tuple[int, Alphabet, bytes]], total: int) -> Assembled:
    """The message of `parts` (part number, alphabet, units) in part order, the first copy
    of each part only. Parts in one alphabet are joined before decoding (see the module
    docstring); a message whose parts differ in alphabet is decoded part by part. Where
    parts are missing the text says so: MISSING stands in each gap."""
    first: dict[int, tuple[Alphabet, bytes]] = {}
    for sequence, of, units in parts:
        if 0 < sequence <= total:
            first.setdefault(sequence, (of, units))
    missing = [sequence for sequence in range(1, total + 1) if sequence not in first]
    if not first:
        return Assembled("", b"", Alphabet.BINARY, False, missing)
    ordered = [first[sequence] for sequence in sorted(first)]
    alphabets = {of for of, _ in ordered}
    joined = b"".join(units for _, units in ordered)
    of = ordered[0][0] if len(alphabets) == 1 else (
        Alphabet.BINARY if Alphabet.BINARY in alphabets else ordered[0][0]
    )  # fmt: skip
    # Runs of parts with no gap between them, each decoded whole, and a gap marked.
    pieces: list[str] = []
    run: list[tuple[Alphabet, bytes]] = []
    for sequence in range(1, total + 2):
        if sequence in first:
            run.append(first[sequence])
            continue
        if run:
            pieces.append(_decode_run(run))
            run = []
        if sequence <= total:
            pieces.append(MISSING)
    text = "" if of is Alphabet.BINARY and len(alphabets) == 1 else "".join(pieces)
    return Assembled(text, joined, of, not missing, missing)


def _decode_run(run: list[tuple[Alphabet, bytes]]) -> str:
    alphabets = {of for of, _ in run}
    if len(alphabets) == 1:
        [of] = alphabets
        return coding.text(of, b"".join(units for _, units in run))
    return "".join(coding.text(of, units) for of, units in run)


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """A text as the submit_sm of each of its parts carries it."""

    data_coding: int
    esm_class: int  # with UDHI set when the text takes more than one part
    short_messages: list[bytes]  # each part's short_message, its header included


_UDHI_ESM_CLASS = 0x40
# A concatenation header numbers the parts in one octet.
MAX_PARTS = 255


class TooManyParts(ValueError):
    """A text that takes more short messages than a concatenation header can number."""


# The single-octet alphabets an SMSC may take data_coding 0 to mean, as Python writes them.
_DEFAULT_CODECS = {Alphabet.LATIN1: "latin-1", Alphabet.ASCII: "ascii"}


def outgoing(
    message: str,
    reference: int,
    *,
    default_alphabet: Alphabet = Alphabet.GSM,
    packed: bool = False,
) -> Outgoing:
    """`message` cut into parts (coding.segment), each with a concatenation header
    numbered by `reference` (0-255) when there are several.

    GSM text goes as data_coding 0, in the alphabet the SMSC takes 0 to mean: septets (packed
    where the bind packs them), or Latin-1 or ASCII octets where the SMSC's default is one
    of those and the text fits it; else the text goes as UCS-2."""
    segments = coding.segment(message)
    of = segments.alphabet
    payloads = segments.payloads
    if of is Alphabet.GSM and default_alphabet in _DEFAULT_CODECS:
        try:
            payloads = [
                gsm_text.encode(_DEFAULT_CODECS[default_alphabet])
                for gsm_text in (coding.text(Alphabet.GSM, payload) for payload in payloads)
            ]
        except UnicodeEncodeError:
            segments = coding.segment_ucs2(message)
            of, payloads = segments.alphabet, segments.payloads
    total = len(payloads)
    if total > MAX_PARTS:
        raise TooManyParts(f"{total} parts; a concatenated message has at most {MAX_PARTS}")
    data_coding = 0 if of is Alphabet.GSM else coding.DATA_CODING[of]
    short_messages = []
    for sequence, payload in enumerate(payloads, start=1):
        header = udh.concatenation(reference & 0xFF, total, sequence) if total > 1 else b""
        if of is Alphabet.GSM and packed and default_alphabet is Alphabet.GSM:
            fill_bits = (7 - len(header) * 8 % 7) % 7
            payload = gsm.pack(payload, fill_bits)
        short_messages.append(header + payload)
    return Outgoing(data_coding, _UDHI_ESM_CLASS if total > 1 else 0, short_messages)
