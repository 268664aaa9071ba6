"""data_coding: what alphabet a short message is in, its text, and a text cut into parts.

SMPP's own values (0-15, SMPP 3.4 5.2.19) name an alphabet; from 0x10 up the value is a GSM
data coding scheme (3GPP TS 23.038 4), whose bits say GSM 7-bit, 8-bit data or UCS-2.
Value 0 is "the SMSC's default alphabet": GSM 03.38 at most SMSCs, Latin-1 or ASCII at some,
so it is a bind's setting.

Parts of a long message are joined as units before they are decoded (septets for GSM, octets
for the rest): a sender that splits an escape sequence or a surrogate pair between two
parts still gets its text back whole.
"""

from __future__ import annotations

import dataclasses
import enum

from smsinbox.core import gsm
from smsinbox.models import Encoding


class Alphabet(enum.StrEnum):
    GSM = "gsm"
    ASCII = "ascii"
    LATIN1 = "latin1"
    CYRILLIC = "cyrillic"
    HEBREW = "hebrew"
    UCS2 = "ucs2"
    BINARY = "binary"


# The alphabets that are text, and how Python reads them (GSM has its own table).
_CODECS = {
    Alphabet.ASCII: "ascii",
    Alphabet.LATIN1: "latin-1",
    Alphabet.CYRILLIC: "iso8859-5",
    Alphabet.HEBREW: "iso8859-8",
    Alphabet.UCS2: "utf-16-be",
}
# SMPP's own data_coding values (JIS, pictograms and the Kanji sets are kept as octets).
_SMPP_CODINGS = {
    1: Alphabet.ASCII,
    3: Alphabet.LATIN1,
    6: Alphabet.CYRILLIC,
    7: Alphabet.HEBREW,
    8: Alphabet.UCS2,
}
# The alphabet's data_coding when sending.
DATA_CODING = {Alphabet.GSM: 0x00, Alphabet.LATIN1: 0x03, Alphabet.UCS2: 0x08}


def alphabet(data_coding: int, default: Alphabet = Alphabet.GSM) -> Alphabet:
    """The alphabet data_coding names; `default` is the SMSC's (value 0)."""
    if data_coding == 0:
        return default
    if data_coding < 0x10:
        return _SMPP_CODINGS.get(data_coding, Alphabet.BINARY)
    group = data_coding >> 4
    if group <= 0x7:  # general data coding (0x00-0x3F) and automatic deletion (0x40-0x7F)
        if data_coding & 0x20:  # compressed: no handset or SMSC uses it; kept as octets
            return Alphabet.BINARY
        return (Alphabet.GSM, Alphabet.BINARY, Alphabet.UCS2, Alphabet.BINARY)[
            (data_coding >> 2) & 0x3
        ]
    if group in (0xC, 0xD):  # message waiting indication, GSM 7-bit
        return Alphabet.GSM
    if group == 0xE:  # message waiting indication, UCS-2
        return Alphabet.UCS2
    if group == 0xF:  # message class: bit 2 says 8-bit data, else GSM 7-bit
        return Alphabet.BINARY if data_coding & 0x04 else Alphabet.GSM
    return Alphabet.BINARY  # reserved groups


def encoding(of: Alphabet) -> Encoding:
    """How smsinbox's APIs name the alphabet: text in a single-octet alphabet is 7bit."""
    if of is Alphabet.UCS2:
        return Encoding.UCS2
    return Encoding.BINARY if of is Alphabet.BINARY else Encoding.GSM7


def units(of: Alphabet, payload: bytes, *, packed: bool = False, fill_bits: int = 0) -> bytes:
    """A part's payload as the units its parts are joined in: GSM as septets one to an
    octet (unpacked when the bind packs them), everything else as it is."""
    if of is Alphabet.GSM and packed:
        return gsm.unpack(payload, fill_bits)
    return payload


def text(of: Alphabet, joined: bytes) -> str:
    """The text of a whole message's joined units (see `units`); binary has none (the
    caller keeps its octets). Octets that are not valid in the alphabet read as U+FFFD:
    the SMSC has acknowledged the message to its sender, so it is stored as it came."""
    if of is Alphabet.GSM:
        return gsm.decode(joined)
    if of is Alphabet.BINARY:
        return ""
    return joined.decode(_CODECS[of], errors="replace")


@dataclasses.dataclass(frozen=True, slots=True)
class Segments:
    """A text to send, cut into the payloads of its short messages."""

    alphabet: Alphabet
    payloads: list[bytes]  # GSM as septets one to an octet, UCS-2 as UTF-16BE

    @property
    def data_coding(self) -> int:
        return DATA_CODING[self.alphabet]


# One short message holds 140 octets: 160 septets or 70 UTF-16 units; beside the
# concatenation header with an 8-bit reference (6 octets), which smsinbox sends, 153 and 67.
SINGLE = {Alphabet.GSM: 160, Alphabet.UCS2: 70}
PART = {Alphabet.GSM: 153, Alphabet.UCS2: 67}


def segment(message: str) -> Segments:
    """`message` in GSM 7-bit where it can be, else UCS-2, cut into the fewest parts, never
    inside an escape sequence or a surrogate pair."""
    if gsm.is_gsm(message):
        return _cut(Alphabet.GSM, [gsm.encode(char) for char in message])
    return segment_ucs2(message)


def segment_ucs2(message: str) -> Segments:
    """`message` in UCS-2 (UTF-16), cut as `segment` cuts it."""
    return _cut(Alphabet.UCS2, [char.encode("utf-16-be") for char in message])


def _cut(of: Alphabet, pieces: list[bytes]) -> Segments:
    size = 1 if of is Alphabet.GSM else 2  # octets to a unit
    total = sum(len(piece) for piece in pieces) // size
    if total <= SINGLE[of]:
        return Segments(of, [b"".join(pieces)])
    payloads: list[bytes] = []
    current = bytearray()
    for piece in pieces:
        if (len(current) + len(piece)) // size > PART[of]:
            payloads.append(bytes(current))
            current = bytearray()
        current += piece
    payloads.append(bytes(current))
    return Segments(of, payloads)


def count_parts(message: str) -> int:
    """How many short messages `message` takes."""
    return len(segment(message).payloads)
