"""The GSM 7-bit default alphabet (3GPP TS 23.038): its characters, its extension table, and
septets packed eight to seven octets.

SMSCs send GSM text over SMPP mostly unpacked, one septet to an octet; some pack it as the
air interface does. Which one a bind gets is the bind's setting (nothing in a PDU says).
A message's length in the alphabet is counted in septets: an extension character (`€`,
`[`, `{`, ...) takes two, the escape and its code.
"""

from __future__ import annotations

ESCAPE = 0x1B

# Code points 0x00-0x7F of the default alphabet; 0x1B is the escape to the extension table
# (its place here is never read as a character).
DEFAULT = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: the code after an escape, and its character.
EXTENSION = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

assert len(DEFAULT) == 128

_ENCODE: dict[str, bytes] = {char: bytes([code]) for code, char in enumerate(DEFAULT)}
del _ENCODE["\x1b"]
_ENCODE.update({char: bytes([ESCAPE, code]) for code, char in EXTENSION.items()})
_SEPTETS = {char: len(code) for char, code in _ENCODE.items()}
# Every character the alphabet can carry.
CHARACTERS = frozenset(_ENCODE)


class NotInAlphabet(ValueError):
    """The text has a character the GSM default alphabet and its extension lack."""


def is_gsm(text: str) -> bool:
    """Whether `text` can be sent in the GSM default alphabet."""
    return all(char in CHARACTERS for char in text)


def septet_count(text: str) -> int:
    """How many septets `text` takes in the GSM alphabet (NotInAlphabet if it cannot)."""
    try:
        return sum(_SEPTETS[char] for char in text)
    except KeyError as missing:
        raise NotInAlphabet(f"{missing.args[0]!r} is not in the GSM 7-bit alphabet") from None


def encode(text: str) -> bytes:
    """`text` as septets, one to an octet (NotInAlphabet if it cannot be)."""
    try:
        return b"".join(_ENCODE[char] for char in text)
    except KeyError as missing:
        raise NotInAlphabet(f"{missing.args[0]!r} is not in the GSM 7-bit alphabet") from None


def decode(septets: bytes) -> str:
    """Text of septets, one to an octet (the top bit of each is ignored, as a handset does).

    An escape followed by a code the extension table lacks reads as that code's character
    in the default table (TS 23.038 6.2.1.1); an escape at the very end reads as nothing.
    """
    chars = []
    escaped = False
    for octet in septets:
        code = octet & 0x7F
        if escaped:
            chars.append(EXTENSION.get(code) or DEFAULT[code])
            escaped = False
        elif code == ESCAPE:
            escaped = True
        else:
            chars.append(DEFAULT[code])
    return "".join(chars)


def pack(septets: bytes, fill_bits: int = 0) -> bytes:
    """Septets packed as on the air: seven bits each, least significant first, after
    `fill_bits` zero bits (which align the text to a septet after a user data header).

    When the last octet has seven bits to spare, they hold a CR rather than zeros, so the
    padding is not read as a final `@`, and `unpack` drops a CR that ends on an octet
    boundary; so a text that itself ends in CR there gets a second one, which the receiver
    shows (TS 23.038 6.1.2.3.1: a CR twice does no harm)."""
    spare = (fill_bits + 7 * len(septets)) % 8
    if spare == 1 or (spare == 0 and septets.endswith(b"\r")):
        septets += b"\r"
    value = 0
    for index, septet in enumerate(septets):
        value |= (septet & 0x7F) << (fill_bits + 7 * index)
    size = (fill_bits + 7 * len(septets) + 7) // 8
    return value.to_bytes(size, "little")


def unpack(octets: bytes, fill_bits: int = 0) -> bytes:
    """The septets packed in `octets` after `fill_bits` bits, one to an octet: every whole
    septet, less a CR that only pads the last octet (see `pack`)."""
    count = (8 * len(octets) - fill_bits) // 7
    value = int.from_bytes(octets, "little") >> fill_bits
    septets = bytes((value >> (7 * index)) & 0x7F for index in range(count))
    if count and (fill_bits + 7 * count) % 8 == 0 and septets[-1] == 0x0D:
        # Seven spare bits at the end: a CR there is padding, the last septet a real one
        # only if the text itself ended in CR (then the sender padded with a second CR).
        septets = septets[:-1]
    return septets
