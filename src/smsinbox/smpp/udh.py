"""The user data header (3GPP TS 23.040 9.2.3.24) at the start of a short message whose
esm_class has UDHI set: its information elements, and the concatenation element that
numbers the parts of a long message.

A header may hold other elements beside the concatenation one (application ports, national
language shifts, ...), before or after it; each is read by its own length, so none hides
the others.
"""

from __future__ import annotations

import dataclasses

# esm_class bit 6: the short message starts with a user data header.
UDHI = 0x40
CONCATENATION_8BIT = 0x00  # reference of one octet
CONCATENATION_16BIT = 0x08  # reference of two octets


class MalformedHeader(ValueError):
    """A user data header longer than its message, or an element cut short."""


@dataclasses.dataclass(frozen=True, slots=True)
class Part:
    """Where a part belongs: its message's reference, how many parts, and which it is (1-)."""

    reference: int
    total: int
    sequence: int


def split(short_message: bytes) -> tuple[bytes, bytes]:
    """The header (with its length octet) and the rest of a short message that has one."""
    if not short_message:
        raise MalformedHeader("UDHI set on an empty message")
    end = 1 + short_message[0]
    if end > len(short_message):
        raise MalformedHeader(f"header of {short_message[0]} octets in {len(short_message)}")
    return short_message[:end], short_message[end:]


def elements(header: bytes) -> list[tuple[int, bytes]]:
    """The header's information elements, as (identifier, data), in order."""
    found = []
    offset = 1
    while offset < len(header):
        if offset + 2 > len(header):
            raise MalformedHeader("an element's length is missing")
        identifier, size = header[offset], header[offset + 1]
        offset += 2
        if offset + size > len(header):
            raise MalformedHeader(f"element {identifier:#04x} is cut short")
        found.append((identifier, header[offset : offset + size]))
        offset += size
    return found


def part(header: bytes) -> Part | None:
    """The concatenation element of a header, if it has a usable one.

    An element with a total or sequence of 0, or a sequence beyond the total, is ignored
    (TS 23.040 9.2.3.24.1): the message is then taken as one whole message."""
    for identifier, data in elements(header):
        if identifier == CONCATENATION_8BIT and len(data) == 3:
            reference, total, sequence = data[0], data[1], data[2]
        elif identifier == CONCATENATION_16BIT and len(data) == 4:
            reference, total, sequence = int.from_bytes(data[:2], "big"), data[2], data[3]
        else:
            continue
        if 0 < sequence <= total:
            return Part(reference, total, sequence)
    return None


def concatenation(reference: int, total: int, sequence: int) -> bytes:
    """A header holding only the concatenation element: 8-bit reference below 256, else
    16-bit."""
    if reference < 0x100:
        return bytes([5, CONCATENATION_8BIT, 3, reference, total, sequence])
    return bytes([6, CONCATENATION_16BIT, 4, *reference.to_bytes(2, "big"), total, sequence])
