"""Phone numbers and sender ids as the store keeps them."""

from __future__ import annotations

import re

from smsinbox.errors import InvalidInput, MissingParameter

_DIGITS = re.compile(r"[0-9]{1,20}")
# Alphanumeric sender ids (GSM allows 11 characters; some networks pass longer ones).
_SENDER_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z .&_'-]{0,31}")


def normalize_msisdn(raw: str | None, field: str = "msisdn") -> str:
    """Digits only, E.164 without '+': '+44 7700 900123' -> '447700900123'."""
    if raw is None or not raw.strip():
        raise MissingParameter(field)
    value = raw.strip().replace(" ", "").removeprefix("+")
    if not _DIGITS.fullmatch(value):
        raise InvalidInput(f"{field} must be a phone number of 1 to 20 digits", field)
    return value


def normalize_sender(raw: str | None, field: str = "from") -> str:
    """A phone number as digits, or an alphanumeric sender id kept as given."""
    if raw is None or not raw.strip():
        raise MissingParameter(field)
    value = raw.strip()
    digits = value.replace(" ", "").removeprefix("+")
    if _DIGITS.fullmatch(digits):
        return digits
    if not _SENDER_ID.fullmatch(value):
        raise InvalidInput(
            f"{field} must be a phone number or an alphanumeric sender id of up to 32 "
            "letters, digits, spaces and . & _ ' -",
            field,
        )
    return value
