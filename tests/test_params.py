"""Request parameters as octets: the parser reads what urllib's parse_qsl reads."""

from __future__ import annotations

from urllib.parse import parse_qsl

from hypothesis import given
from hypothesis import strategies as st

from smsinbox.dialects.params import _parse

# Pieces that exercise every rule: separators, escapes good and bad, a plus inside and
# outside an escape, octets beyond ASCII and an escaped multi-octet character.
PIECES = [b"a", b"b", b"=", b"&", b"%", b"+", b"2", b"B", b";", b" ", b"\xff", b"%2B",
          b"%26", b"%3D", b"%zz", b"%e2%82%ac", b"%0", b"%00"]  # fmt: skip


def reference(encoded: bytes) -> dict[str, bytes]:
    """parse_qsl through Latin-1 (every octet one code point), the first value winning."""
    pairs = parse_qsl(encoded.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    values: dict[str, bytes] = {}
    for name, value in pairs:
        values.setdefault(name, value.encode("latin-1"))
    return values


@given(st.lists(st.sampled_from(PIECES), max_size=20).map(b"".join))
def test_parsed_as_parse_qsl_parses(encoded: bytes) -> None:
    assert _parse(encoded) == reference(encoded)


def test_values_are_exact_octets() -> None:
    assert _parse(b"text=%00%ff%E2%82%AC+x&from=%2B44&text=second&flag") == {
        "text": b"\x00\xff\xe2\x82\xac x",
        "from": b"+44",
        "flag": b"",
    }
