"""The EAPI pipe codec: any text survives a client that splits on '|' and on lines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsinbox.dialects import pipe


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("Hi there", "Hi there"),
        ("line one\nline two\r\n", "line one\\nline two\\r\\n"),
        ("a|b", "a\\x7cb"),
        ("C:\\new", "C:\\\\new"),
        ("tab\tkept", "tab\tkept"),
        ("para\u2029graph\x85", "para\\u2029graph\\x85"),
        ("This is a Unicode message ☺", "This is a Unicode message ☺"),
    ],
)
def test_escapes(text: str, escaped: str) -> None:
    assert pipe.escape(text) == escaped
    assert pipe.unescape(escaped) == text


@given(st.text())
def test_any_text_round_trips(text: str) -> None:
    assert pipe.unescape(pipe.escape(text)) == text


@given(st.text(), st.text(alphabet="0123456789", min_size=1, max_size=15))
def test_a_record_always_splits_into_seven_fields_on_one_line(text: str, sender: str) -> None:
    record = pipe.line(19, sender, pipe.escape(text), "2011-01-20 16:06:40", "44771", 0, "7bit")
    body = f"0|records to follow|1\n\n{record}\n"
    lines = body.splitlines()
    assert len(lines) == 3 and lines[1] == ""
    fields = lines[2].split("|")
    assert len(fields) == 7
    assert pipe.unescape(fields[2]) == text
