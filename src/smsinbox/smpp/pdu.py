"""SMPP 3.4 PDUs: the header, each command's mandatory parameters, and the optional ones
(TLVs), as octets and back.

A PDU is its command, status and sequence number, its mandatory parameters by name (a
command's layout says their order and kind) and its TLVs by tag, kept as octets with typed
readers for the tags an inbox uses. Decoding is strict where a wrong guess would lose or
garble a message (a short message longer than its PDU, a truncated TLV, a string without
its NUL) and lenient where nothing is at stake (a string longer than the specification's
maximum is read as sent; unknown TLVs are kept). Every decoding failure carries the
command_status that tells the peer what was wrong.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Mapping
from typing import Final

HEADER = struct.Struct(">IIII")  # command_length, command_id, command_status, sequence_number
# The largest PDU either side accepts: a deliver_sm with a full message_payload TLV is a few
# hundred octets; anything near this is garbage or an attack on memory.
MAX_LENGTH: Final = 65_536
RESPONSE_BIT: Final = 0x8000_0000
MAX_SEQUENCE: Final = 0x7FFF_FFFF


class Command(enum.IntEnum):
    GENERIC_NACK = 0x8000_0000
    BIND_RECEIVER = 0x0000_0001
    BIND_RECEIVER_RESP = 0x8000_0001
    BIND_TRANSMITTER = 0x0000_0002
    BIND_TRANSMITTER_RESP = 0x8000_0002
    QUERY_SM = 0x0000_0003
    QUERY_SM_RESP = 0x8000_0003
    SUBMIT_SM = 0x0000_0004
    SUBMIT_SM_RESP = 0x8000_0004
    DELIVER_SM = 0x0000_0005
    DELIVER_SM_RESP = 0x8000_0005
    UNBIND = 0x0000_0006
    UNBIND_RESP = 0x8000_0006
    REPLACE_SM = 0x0000_0007
    REPLACE_SM_RESP = 0x8000_0007
    CANCEL_SM = 0x0000_0008
    CANCEL_SM_RESP = 0x8000_0008
    BIND_TRANSCEIVER = 0x0000_0009
    BIND_TRANSCEIVER_RESP = 0x8000_0009
    OUTBIND = 0x0000_000B
    ENQUIRE_LINK = 0x0000_0015
    ENQUIRE_LINK_RESP = 0x8000_0015
    SUBMIT_MULTI = 0x0000_0021
    SUBMIT_MULTI_RESP = 0x8000_0021
    ALERT_NOTIFICATION = 0x0000_0102
    DATA_SM = 0x0000_0103
    DATA_SM_RESP = 0x8000_0103

    @property
    def is_response(self) -> bool:
        return bool(self & RESPONSE_BIT)

    @property
    def response(self) -> Command:
        """The response to this request."""
        return Command(self | RESPONSE_BIT)


class Status(enum.IntEnum):
    """command_status values (SMPP 3.4, 5.1.3)."""

    ESME_ROK = 0x00
    ESME_RINVMSGLEN = 0x01
    ESME_RINVCMDLEN = 0x02
    ESME_RINVCMDID = 0x03
    ESME_RINVBNDSTS = 0x04
    ESME_RALYBND = 0x05
    ESME_RINVPRTFLG = 0x06
    ESME_RINVREGDLVFLG = 0x07
    ESME_RSYSERR = 0x08
    ESME_RINVSRCADR = 0x0A
    ESME_RINVDSTADR = 0x0B
    ESME_RINVMSGID = 0x0C
    ESME_RBINDFAIL = 0x0D
    ESME_RINVPASWD = 0x0E
    ESME_RINVSYSID = 0x0F
    ESME_RCANCELFAIL = 0x11
    ESME_RREPLACEFAIL = 0x13
    ESME_RMSGQFUL = 0x14
    ESME_RINVSERTYP = 0x15
    ESME_RINVNUMDESTS = 0x33
    ESME_RINVDLNAME = 0x34
    ESME_RINVDESTFLAG = 0x40
    ESME_RINVSUBREP = 0x42
    ESME_RINVESMCLASS = 0x43
    ESME_RCNTSUBDL = 0x44
    ESME_RSUBMITFAIL = 0x45
    ESME_RINVSRCTON = 0x48
    ESME_RINVSRCNPI = 0x49
    ESME_RINVDSTTON = 0x50
    ESME_RINVDSTNPI = 0x51
    ESME_RINVSYSTYP = 0x53
    ESME_RINVREPFLAG = 0x54
    ESME_RINVNUMMSGS = 0x55
    ESME_RTHROTTLED = 0x58
    ESME_RINVSCHED = 0x61
    ESME_RINVEXPIRY = 0x62
    ESME_RINVDFTMSGID = 0x63
    ESME_RX_T_APPN = 0x64
    ESME_RX_P_APPN = 0x65
    ESME_RX_R_APPN = 0x66
    ESME_RQUERYFAIL = 0x67
    ESME_RINVOPTPARSTREAM = 0xC0
    ESME_ROPTPARNOTALLWD = 0xC1
    ESME_RINVPARLEN = 0xC2
    ESME_RMISSINGOPTPARAM = 0xC3
    ESME_RINVOPTPARAMVAL = 0xC4
    ESME_RDELIVERYFAILURE = 0xFE
    ESME_RUNKNOWNERR = 0xFF


class Tag(enum.IntEnum):
    """The optional parameters (TLVs) an inbox reads or writes (SMPP 3.4, 5.3.2)."""

    DEST_ADDR_SUBUNIT = 0x0005
    SOURCE_ADDR_SUBUNIT = 0x000D
    PAYLOAD_TYPE = 0x0019
    RECEIPTED_MESSAGE_ID = 0x001E
    USER_MESSAGE_REFERENCE = 0x0204
    SOURCE_PORT = 0x020A
    DESTINATION_PORT = 0x020B
    SAR_MSG_REF_NUM = 0x020C
    LANGUAGE_INDICATOR = 0x020D
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    SC_INTERFACE_VERSION = 0x0210
    NETWORK_ERROR_CODE = 0x0423
    MESSAGE_PAYLOAD = 0x0424
    DELIVERY_FAILURE_REASON = 0x0425
    MORE_MESSAGES_TO_SEND = 0x0426
    MESSAGE_STATE = 0x0427


class DecodeError(ValueError):
    """A PDU that cannot be read; `status` is what to answer it with."""

    def __init__(self, status: Status, detail: str) -> None:
        super().__init__(f"{status.name}: {detail}")
        self.status = status
        self.detail = detail


# Kinds of mandatory parameter: a C-Octet string with its maximum size (NUL included), an
# integer of 1 or 4 octets, and the short message (sm_length, then that many octets).
CSTRING, U8, U32, SHORT_MESSAGE = "cstring", "u8", "u32", "short_message"
Field = tuple[str, str, int]  # name, kind, maximum size (strings)

_BIND = (
    ("system_id", CSTRING, 16),
    ("password", CSTRING, 9),
    ("system_type", CSTRING, 13),
    ("interface_version", U8, 0),
    ("addr_ton", U8, 0),
    ("addr_npi", U8, 0),
    ("address_range", CSTRING, 41),
)
_SM = (
    ("service_type", CSTRING, 6),
    ("source_addr_ton", U8, 0),
    ("source_addr_npi", U8, 0),
    ("source_addr", CSTRING, 21),
    ("dest_addr_ton", U8, 0),
    ("dest_addr_npi", U8, 0),
    ("destination_addr", CSTRING, 21),
    ("esm_class", U8, 0),
    ("protocol_id", U8, 0),
    ("priority_flag", U8, 0),
    ("schedule_delivery_time", CSTRING, 17),
    ("validity_period", CSTRING, 17),
    ("registered_delivery", U8, 0),
    ("replace_if_present_flag", U8, 0),
    ("data_coding", U8, 0),
    ("sm_default_msg_id", U8, 0),
    ("short_message", SHORT_MESSAGE, 254),
)
_DATA_SM = (
    ("service_type", CSTRING, 6),
    ("source_addr_ton", U8, 0),
    ("source_addr_npi", U8, 0),
    ("source_addr", CSTRING, 65),
    ("dest_addr_ton", U8, 0),
    ("dest_addr_npi", U8, 0),
    ("destination_addr", CSTRING, 65),
    ("esm_class", U8, 0),
    ("registered_delivery", U8, 0),
    ("data_coding", U8, 0),
)
_MESSAGE_ID = (("message_id", CSTRING, 65),)

# Each command's mandatory parameters in order; a command absent here is not one an ESME
# takes (it is answered with generic_nack ESME_RINVCMDID).
LAYOUTS: Final[Mapping[Command, tuple[Field, ...]]] = {
    Command.GENERIC_NACK: (),
    Command.BIND_RECEIVER: _BIND,
    Command.BIND_TRANSMITTER: _BIND,
    Command.BIND_TRANSCEIVER: _BIND,
    Command.BIND_RECEIVER_RESP: (("system_id", CSTRING, 16),),
    Command.BIND_TRANSMITTER_RESP: (("system_id", CSTRING, 16),),
    Command.BIND_TRANSCEIVER_RESP: (("system_id", CSTRING, 16),),
    Command.OUTBIND: (("system_id", CSTRING, 16), ("password", CSTRING, 9)),
    Command.UNBIND: (),
    Command.UNBIND_RESP: (),
    Command.ENQUIRE_LINK: (),
    Command.ENQUIRE_LINK_RESP: (),
    Command.SUBMIT_SM: _SM,
    Command.SUBMIT_SM_RESP: _MESSAGE_ID,
    Command.DELIVER_SM: _SM,
    Command.DELIVER_SM_RESP: _MESSAGE_ID,
    Command.DATA_SM: _DATA_SM,
    Command.DATA_SM_RESP: _MESSAGE_ID,
    Command.ALERT_NOTIFICATION: (
        ("source_addr_ton", U8, 0),
        ("source_addr_npi", U8, 0),
        ("source_addr", CSTRING, 65),
        ("esme_addr_ton", U8, 0),
        ("esme_addr_npi", U8, 0),
        ("esme_addr", CSTRING, 65),
    ),
}

Value = int | str | bytes


@dataclasses.dataclass(slots=True)
class Pdu:
    """One PDU: its header, its mandatory parameters by name, its TLVs by tag (octets)."""

    command: Command
    sequence: int
    status: int = Status.ESME_ROK
    params: dict[str, Value] = dataclasses.field(default_factory=dict)
    tlvs: dict[int, bytes] = dataclasses.field(default_factory=dict)

    def text(self, name: str) -> str:
        """A C-Octet string parameter ('' where absent)."""
        value = self.params.get(name, "")
        assert isinstance(value, str)
        return value

    def number(self, name: str) -> int:
        """An integer parameter (0 where absent)."""
        value = self.params.get(name, 0)
        assert isinstance(value, int)
        return value

    def octets(self, name: str) -> bytes:
        """An octet-string parameter (b'' where absent)."""
        value = self.params.get(name, b"")
        assert isinstance(value, bytes)
        return value

    def tlv_int(self, tag: int) -> int | None:
        """A TLV read as an unsigned big-endian integer, or None where absent."""
        value = self.tlvs.get(tag)
        return None if value is None else int.from_bytes(value, "big")

    def tlv_text(self, tag: int) -> str | None:
        """A TLV read as a C-Octet string (its NUL, if any, dropped), or None where absent."""
        value = self.tlvs.get(tag)
        return None if value is None else value.split(b"\0", 1)[0].decode("latin-1")

    def response(self, status: int = Status.ESME_ROK, **params: Value) -> Pdu:
        """The response to this request, with its sequence number."""
        return Pdu(self.command.response, self.sequence, status, dict(params))


def encode(pdu: Pdu) -> bytes:
    """The PDU's octets. A parameter not given is its empty value (0, '', no octets)."""
    body = bytearray()
    # A response with an error status carries no body (SMPP 3.4, 3.3; peers send none);
    # generic_nack never has one.
    if not (pdu.command.is_response and pdu.status != Status.ESME_ROK):
        for name, kind, size in LAYOUTS.get(pdu.command, ()):
            value = pdu.params.get(name)
            if kind == CSTRING:
                text = value if isinstance(value, str) else ""
                raw = text.encode("latin-1")
                if len(raw) >= size:
                    raise ValueError(f"{name} is longer than {size - 1} octets")
                body += raw + b"\0"
            elif kind == SHORT_MESSAGE:
                raw = value if isinstance(value, bytes) else b""
                if len(raw) > size:
                    raise ValueError(f"{name} is longer than {size} octets")
                body.append(len(raw))
                body += raw
            else:
                number = value if isinstance(value, int) else 0
                body += number.to_bytes(1 if kind == U8 else 4, "big")
        for tag, value in pdu.tlvs.items():
            body += struct.pack(">HH", tag, len(value)) + value
    length = HEADER.size + len(body)
    return HEADER.pack(length, pdu.command, pdu.status, pdu.sequence) + bytes(body)


def read_header(octets: bytes) -> tuple[int, int, int, int]:
    """The header's command_length, command_id, command_status and sequence_number.

    A length outside what any PDU can have is a DecodeError: the stream cannot be read
    any further (where the next PDU starts is unknown)."""
    length, command_id, status, sequence = HEADER.unpack_from(octets)
    if not HEADER.size <= length <= MAX_LENGTH:
        raise DecodeError(Status.ESME_RINVCMDLEN, f"command_length {length}")
    return length, command_id, status, sequence


def decode(octets: bytes) -> Pdu:
    """The PDU in `octets` (exactly one: header and body)."""
    if len(octets) < HEADER.size:
        raise DecodeError(Status.ESME_RINVCMDLEN, f"{len(octets)} octets, less than a header")
    length, command_id, status, sequence = read_header(octets)
    if length != len(octets):
        raise DecodeError(Status.ESME_RINVCMDLEN, f"command_length {length} of {len(octets)}")
    try:
        command = Command(command_id)
    except ValueError:
        raise DecodeError(Status.ESME_RINVCMDID, f"command_id {command_id:#010x}") from None
    pdu = Pdu(command, sequence, status)
    if length == HEADER.size:
        return pdu  # no body: an empty command, or a response carrying only its status
    offset = HEADER.size
    for name, kind, _size in LAYOUTS.get(command, ()):
        if offset >= length and command.is_response:
            return pdu  # a response may stop short (an error's, or a peer's habit)
        pdu.params[name], offset = _read_field(octets, offset, name, kind)
    pdu.tlvs = _read_tlvs(octets, offset)
    return pdu


def _read_field(octets: bytes, offset: int, name: str, kind: str) -> tuple[Value, int]:
    if kind == CSTRING:
        end = octets.find(b"\0", offset)
        if end < 0:
            raise DecodeError(Status.ESME_RINVPARLEN, f"{name} has no terminating NUL")
        return octets[offset:end].decode("latin-1"), end + 1
    if kind == SHORT_MESSAGE:
        if offset >= len(octets):
            raise DecodeError(Status.ESME_RINVCMDLEN, "sm_length missing")
        size = octets[offset]
        end = offset + 1 + size
        if end > len(octets):
            raise DecodeError(Status.ESME_RINVMSGLEN, f"sm_length {size} beyond the PDU")
        return octets[offset + 1 : end], end
    width = 1 if kind == U8 else 4
    if offset + width > len(octets):
        raise DecodeError(Status.ESME_RINVCMDLEN, f"{name} missing")
    return int.from_bytes(octets[offset : offset + width], "big"), offset + width


def _read_tlvs(octets: bytes, offset: int) -> dict[int, bytes]:
    tlvs: dict[int, bytes] = {}
    while offset < len(octets):
        if offset + 4 > len(octets):
            raise DecodeError(Status.ESME_RINVOPTPARSTREAM, "a TLV's header is cut short")
        tag, size = struct.unpack_from(">HH", octets, offset)
        offset += 4
        if offset + size > len(octets):
            raise DecodeError(Status.ESME_RINVOPTPARSTREAM, f"TLV {tag:#06x} is cut short")
        tlvs[tag] = octets[offset : offset + size]
        offset += size
    return tlvs
