"""Message bodies: the three SMS encodings, upstream charsets and hex payloads.

The text of every message is stored as Unicode. The exact octets are kept beside it
whenever the text alone could not give them back: always for 8bit, and for any text with a
NUL character, which PostgreSQL cannot store in a text column.
"""

from __future__ import annotations

import binascii
import codecs

from smsinbox.core import gsm
from smsinbox.errors import InvalidInput
from smsinbox.models import Encoding

# Kannel's %c: 0 GSM 7-bit, 1 8-bit data, 2 UCS-2.
KANNEL_CODINGS = {"0": Encoding.GSM7, "1": Encoding.BINARY, "2": Encoding.UCS2}

_REPLACEMENT = "\ufffd"

_FALLBACKS = {
    Encoding.GSM7: ["utf-8", "iso8859-1"],
    Encoding.UCS2: ["utf-8", "utf-16-be"],
    Encoding.BINARY: [],
}


def parse_encoding(encoding: str | None, coding: str | None) -> Encoding:
    """The encoding named by `encoding` (7bit/8bit/16bit) or Kannel's `coding` (0/1/2)."""
    if encoding:
        try:
            return Encoding(encoding.strip().lower())
        except ValueError:
            raise InvalidInput("encoding must be 7bit, 8bit or 16bit", "encoding") from None
    if coding:
        try:
            return KANNEL_CODINGS[coding.strip()]
        except KeyError:
            raise InvalidInput("coding must be 0, 1 or 2", "coding") from None
    return Encoding.GSM7


def _codec(charset: str | None) -> str:
    name = (charset or "utf-8").strip().lower()
    if name in {"ucs-2", "ucs2", "utf-16", "utf16"}:
        # Network UCS-2 is big-endian without a byte order mark.
        return "utf-16-be"
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):  # a NUL in the name is a ValueError
        raise InvalidInput(f"unknown charset {charset!r}", "charset") from None
    # Binary transforms (base64, zlib, rot13) are codecs too, but bytes.decode refuses them.
    if not getattr(info, "_is_text_encoding", True):
        raise InvalidInput(f"unknown charset {charset!r}", "charset")
    return info.name


def decode_text(octets: bytes, encoding: Encoding, charset: str | None) -> tuple[str, bytes | None]:
    """Text and kept octets for a body that arrived as text in `charset`.

    Without a charset the text is taken as UTF-8 when it is valid UTF-8, else in the
    encoding's own legacy charset (Latin-1 for 7bit, as older Kannel sends it; UTF-16BE for
    16bit, tried first when the octets hold NULs): an upstream that cannot name its charset
    still gets its message stored rather than refused for good.
    """
    if encoding is Encoding.BINARY:
        return readable(octets), octets
    if charset and charset.strip():
        candidates = [_codec(charset)]
    elif encoding is Encoding.UCS2 and b"\x00" in octets and len(octets) % 2 == 0:
        # UTF-8 text never holds NUL octets; UTF-16BE of Latin script is full of them.
        candidates = ["utf-16-be", "utf-8"]
    else:
        candidates = _FALLBACKS[encoding]
    for codec in candidates:
        try:
            return storable(octets.decode(codec), octets)
        except UnicodeError:  # some codecs (idna, undefined) raise the base class
            continue
    raise InvalidInput(f"text is not valid {charset or ' or '.join(candidates)}", "text")


def decode_hex(payload: str, encoding: Encoding) -> tuple[str, bytes | None]:
    """Text and kept octets for a body that arrived as hex (8bit octets, 16bit UTF-16BE)."""
    if encoding is Encoding.GSM7:
        raise InvalidInput("a hex body needs encoding 8bit or 16bit", "hex")
    try:
        octets = binascii.unhexlify(payload.strip())
    except (binascii.Error, ValueError):
        raise InvalidInput("hex must be an even number of hexadecimal digits", "hex") from None
    if encoding is Encoding.BINARY:
        return readable(octets), octets
    try:
        text = octets.decode("utf-16-be")
    except UnicodeDecodeError:
        raise InvalidInput("hex is not valid UTF-16BE (UCS-2)", "hex") from None
    return storable(text, octets)


def readable(octets: bytes) -> str:
    """A best-effort reading of 8bit data: UTF-8 if it is valid, else Latin-1."""
    try:
        text = octets.decode("utf-8")
    except UnicodeDecodeError:
        text = octets.decode("latin-1")
    return text.replace("\x00", _REPLACEMENT)


def storable(text: str, octets: bytes) -> tuple[str, bytes | None]:
    """Text and kept octets: the octets are kept when the text has a NUL, which PostgreSQL
    cannot store in a text column (it is stored as U+FFFD)."""
    if "\x00" in text:
        return text.replace("\x00", _REPLACEMENT), octets
    return text, None


def encoding_for(text: str) -> Encoding:
    """7bit when every character fits the GSM alphabet, else 16bit (UCS-2)."""
    return Encoding.GSM7 if gsm.is_gsm(text) else Encoding.UCS2
