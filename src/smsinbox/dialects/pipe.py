"""The pipe-delimited text of the EAPI: one record per line, fields split on '|'.

The platform escapes newline and carriage return in message bodies as ``\\n`` and ``\\r``.
smsinbox extends that so every body survives a client that splits on '|' and on lines:

- a backslash becomes ``\\\\`` (so ``\\n`` in the original text stays distinguishable);
- ``|`` becomes ``\\x7c``;
- every other character that some line splitter treats as a line break (vertical tab,
  form feed, the file/group/record separators, NEL, U+2028, U+2029) becomes ``\\xHH`` or
  ``\\uHHHH``.

That is the escaping of C and Python string literals, so ordinary unescape routines undo it;
:func:`unescape` is the exact inverse.
"""

from __future__ import annotations

import re

_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}
_HEX = "|\v\f\x1c\x1d\x1e\x85\u2028\u2029"
_SPECIAL = re.compile("[" + re.escape("\\\n\r" + _HEX) + "]")
_ESCAPE = re.compile(r"\\(\\|n|r|x[0-9a-f]{2}|u[0-9a-f]{4})")


def _escape_one(match: re.Match[str]) -> str:
    character = match.group()
    if character in _NAMED:
        return _NAMED[character]
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """A field value with no '|' and no line break in it."""
    # Most texts have nothing to escape: one search, no substitution machinery.
    if _SPECIAL.search(text) is None:
        return text
    return _SPECIAL.sub(_escape_one, text)


def _unescape_one(match: re.Match[str]) -> str:
    sequence = match.group(1)
    if sequence == "\\":
        return "\\"
    if sequence == "n":
        return "\n"
    if sequence == "r":
        return "\r"
    return chr(int(sequence[1:], 16))


def unescape(field: str) -> str:
    """The original text of an escaped field."""
    return _ESCAPE.sub(_unescape_one, field)


def line(*fields: object) -> str:
    """One record or status line (without its line end); text fields must be escaped first."""
    return "|".join(str(field) for field in fields)
