"""Parsers of the plain values every dialect, upstream and worker reads off the wire."""

from __future__ import annotations

# 18 digits always fit a signed 64-bit integer (the store's ids and times): nothing
# longer reaches a query, where SQLite would overflow and PostgreSQL refuse it.
MAX_DIGITS = 18


def parse_count(raw: str | None) -> int | None:
    """A non-negative integer written in ASCII digits (surrounding blanks allowed), or None.

    ASCII only: str.isdigit also admits "²" and "١٢", which int() then refuses or reads.
    """
    value = (raw or "").strip()
    if not value or len(value) > MAX_DIGITS or not (value.isascii() and value.isdigit()):
        return None
    return int(value)
