from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsinbox.core.encodings import decode_hex, decode_text, parse_encoding, readable
from smsinbox.core.numbers import normalize_msisdn, normalize_sender
from smsinbox.errors import InvalidInput, MissingParameter
from smsinbox.models import Encoding


@pytest.mark.parametrize(
    ("encoding", "coding", "expected"),
    [
        (None, None, Encoding.GSM7),
        (None, "0", Encoding.GSM7),
        (None, "1", Encoding.BINARY),
        (None, "2", Encoding.UCS2),
        ("16BIT", None, Encoding.UCS2),
        ("8bit", "0", Encoding.BINARY),  # the explicit name wins
    ],
)
def test_encoding_from_name_or_kannel_coding(
    encoding: str | None, coding: str | None, expected: Encoding
) -> None:
    assert parse_encoding(encoding, coding) is expected


@pytest.mark.parametrize(("encoding", "coding"), [("9bit", None), (None, "3"), (None, "x")])
def test_unknown_encodings_are_refused(encoding: str | None, coding: str | None) -> None:
    with pytest.raises(InvalidInput):
        parse_encoding(encoding, coding)


def test_kannel_ucs2_text_arrives_as_utf16be_octets() -> None:
    octets = "Grüße ☺ 😀".encode("utf-16-be")
    assert decode_text(octets, Encoding.UCS2, "UTF-16BE") == ("Grüße ☺ 😀", None)
    assert decode_text(octets, Encoding.UCS2, "UCS-2") == ("Grüße ☺ 😀", None)


def test_text_defaults_to_utf8_and_honours_other_charsets() -> None:
    assert decode_text("héllo".encode(), Encoding.GSM7, None) == ("héllo", None)
    assert decode_text("héllo".encode("latin-1"), Encoding.GSM7, "ISO-8859-1")[0] == "héllo"


def test_text_without_charset_falls_back_to_the_encodings_legacy_charset() -> None:
    assert decode_text(b"caf\xe9", Encoding.GSM7, None) == ("café", None)
    assert decode_text(b"caf\xe9", Encoding.GSM7, "") == ("café", None)
    assert decode_text("ü☺".encode("utf-16-be"), Encoding.UCS2, None) == ("ü☺", None)
    # Valid UTF-8 is read as UTF-8: an HTTP upstream's text parameter is text.
    assert decode_text("ü☺".encode(), Encoding.UCS2, None) == ("ü☺", None)
    # UTF-16BE of plain ASCII is valid UTF-8 too, but full of NULs, which text never has.
    assert decode_text("Hi there".encode("utf-16-be"), Encoding.UCS2, None) == ("Hi there", None)


def test_undecodable_text_and_unknown_charsets_are_refused() -> None:
    with pytest.raises(InvalidInput, match="not valid utf-8"):
        decode_text(b"\xff\xfe\xfd", Encoding.GSM7, "utf-8")
    with pytest.raises(InvalidInput, match="not valid"):
        decode_text(b"\xd8\x00", Encoding.UCS2, None)
    with pytest.raises(InvalidInput, match="unknown charset"):
        decode_text(b"hi", Encoding.GSM7, "klingon-8")


def test_8bit_keeps_exact_octets() -> None:
    text, body = decode_text(b"\x00\xff\x10A", Encoding.BINARY, None)
    assert body == b"\x00\xff\x10A"
    assert "\x00" not in text


def test_8bit_hex_round_trip_example_from_eapi() -> None:
    text, body = decode_hex("234f345a324b6b523a", Encoding.BINARY)
    assert body == bytes.fromhex("234f345a324b6b523a")
    assert body.hex() == "234f345a324b6b523a"
    assert text == "#O4Z2KkR:"


@given(st.binary(max_size=300))
def test_any_8bit_payload_survives_hex(octets: bytes) -> None:
    text, body = decode_hex(octets.hex().upper(), Encoding.BINARY)
    assert body == octets
    assert "\x00" not in text


@given(st.text(max_size=200))
def test_any_unicode_text_survives_16bit_hex(original: str) -> None:
    text, body = decode_hex(original.encode("utf-16-be").hex(), Encoding.UCS2)
    assert text == original.replace("\x00", "\ufffd")
    if "\x00" in original:
        assert body == original.encode("utf-16-be")  # nothing lost


@pytest.mark.parametrize(
    ("payload", "encoding", "message"),
    [
        ("abc", Encoding.BINARY, "even number"),
        ("zz", Encoding.BINARY, "even number"),
        ("d800", Encoding.UCS2, "not valid UTF-16BE"),  # a lone surrogate
        ("4142", Encoding.GSM7, "8bit or 16bit"),
    ],
)
def test_bad_hex_is_refused(payload: str, encoding: Encoding, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_hex(payload, encoding)


def test_readable_prefers_utf8() -> None:
    assert readable("ok ☺".encode()) == "ok ☺"
    assert readable(b"\xe9t\xe9") == "été"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("+44 7700 900123", "447700900123"), ("61411001001", "61411001001"), (" 123 ", "123")],
)
def test_msisdns_are_stored_as_digits(raw: str, expected: str) -> None:
    assert normalize_msisdn(raw) == expected


@pytest.mark.parametrize("raw", ["44_7700", "abc", "1" * 21, "+", "٣٣٣"])
def test_non_numbers_are_refused(raw: str) -> None:
    with pytest.raises(InvalidInput):
        normalize_msisdn(raw, "to")


def test_missing_number_is_a_missing_parameter() -> None:
    with pytest.raises(MissingParameter):
        normalize_msisdn("  ", "to")


def test_senders_may_be_alphanumeric_but_not_arbitrary() -> None:
    assert normalize_sender("+61 409 560 857") == "61409560857"
    assert normalize_sender("BANK Ltd") == "BANK Ltd"
    for bad in ["a|b", "x\ny", "<script>", "A" * 40]:
        with pytest.raises(InvalidInput):
            normalize_sender(bad)
