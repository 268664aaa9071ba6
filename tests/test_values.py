"""The one parser of counts and ids that every dialect, upstream and the push worker use."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from smsinbox.core.values import MAX_DIGITS, parse_count


@given(st.integers(min_value=0, max_value=10**MAX_DIGITS - 1), st.sampled_from(["", " ", "\t"]))
def test_ascii_digits_read_as_their_number(number: int, blank: str) -> None:
    assert parse_count(f"{blank}{number}{blank}") == number


@given(st.text())
def test_anything_else_is_no_count(raw: str) -> None:
    value = raw.strip()
    is_count = 0 < len(value) <= MAX_DIGITS and all("0" <= c <= "9" for c in value)
    assert (parse_count(raw) is not None) == is_count


def test_digits_that_are_not_ascii_are_no_count() -> None:
    for raw in (
        "²",
        "١٢",
        "\uff15",
        "1²",
        "-1",
        "+1",
        "1e3",
        "1_000",
        "0x10",
        "9" * (MAX_DIGITS + 1),
    ):
        assert parse_count(raw) is None, raw
    assert parse_count(None) is None
