"""Phone numbers and sender ids as the store keeps them: E.164 digits without '+'.

Upstreams deliver numbers as bare international digits ('447700900123'); people write them
in many other ways. One reading serves both, optionally in a region (an ISO 3166 code such
as GB: the country whose national forms are meant):

- the separators people write (spaces, '-', '.', '(', ')', '/') are dropped;
- '+' and a leading 'tel:' mark an international number;
- '00' is the ITU international prefix, understood with or without a region;
- with a region, a number that starts with 0 (a trunk prefix, or in Italy part of the
  number), starts with the region's own international prefix ('011' in the US, '0011' in
  Australia, '810' in Russia), or was written with separators is read as a phone there
  dials it, and becomes E.164 if it is a whole number of that country; anything else,
  such as a short code ('81025'), keeps the digits as written;
- bare digits that start with anything but 0 are kept as they are: that is how Kannel and
  SMPP deliver international numbers, and ingest reads them without parsing anything.
"""

from __future__ import annotations

import functools
import re

from smsinbox.config import valid_region
from smsinbox.errors import InvalidInput, MissingParameter

_MAX_DIGITS = 20
_DIGITS = re.compile(rf"[0-9]{{1,{_MAX_DIGITS}}}")
# Alphanumeric sender ids (GSM allows 11 characters; some networks pass longer ones).
_SENDER_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z .&_'-]{0,31}")
# What people put between digits: spaces (no-break and thin ones too), dashes of every
# kind, dots, brackets around an area code, a slash after one (German style).
_SEPARATORS = " \u00a0\u2007\u2009\u202f-\u2010\u2011\u2012\u2013\u2014\u2212.()/"
_NO_SEPARATORS = str.maketrans(dict.fromkeys(_SEPARATORS))
# What a written number may hold at all: anything else is not one.
_WRITTEN = re.compile(rf"(?:[Tt][Ee][Ll]:)?\+?[0-9{re.escape(_SEPARATORS)}]{{1,64}}")
# The shortest international numbers (Niue, Tokelau, Saint Helena) have seven digits: after
# '00', fewer is a national or short number that happens to start with zeros ('000').
_SHORTEST_INTERNATIONAL = 7


def normalize_msisdn(raw: str | None, field: str = "msisdn", *, region: str | None = None) -> str:
    """A phone number as the store keeps it: '+44 7700 900123' -> '447700900123'; with
    region GB, '07700 900123' too."""
    value = "" if raw is None else raw.strip()
    if not value:
        raise MissingParameter(field)
    number = _read(value, region)
    if number is None:
        raise InvalidInput(f"{field} must be a phone number of 1 to 20 digits", field)
    return number


def normalize_sender(raw: str | None, field: str = "from", *, region: str | None = None) -> str:
    """A phone number as the store keeps it, or an alphanumeric sender id kept as given."""
    value = "" if raw is None else raw.strip()
    if not value:
        raise MissingParameter(field)
    number = _read(value, region)
    if number is not None:
        return number
    if not _SENDER_ID.fullmatch(value):
        raise InvalidInput(
            f"{field} must be a phone number or an alphanumeric sender id of up to 32 "
            "letters, digits, spaces and . & _ ' -",
            field,
        )
    return value


def validate_region(region: str | None, field: str = "region") -> str | None:
    """A region numbers can be read in, upper-cased; None (or empty) for none."""
    if region is None or not region.strip():
        return None
    code = region.strip().upper()
    if not valid_region(code):
        raise InvalidInput(f"{field} must be a country code such as GB, DE or US", field)
    return code


def _read(value: str, region: str | None) -> str | None:
    """The stored digits of the number written as `value` (stripped), or None if it is not
    a number."""
    # str methods rather than _DIGITS on these two paths: they are how upstreams deliver
    # numbers, and ingest's hottest code (isdigit alone would take '²' and '٣').
    if value.isdigit() and value.isascii() and len(value) <= _MAX_DIGITS:
        # Nothing is parsed unless the number is dialled in a region.
        if region:
            if value.startswith(_dialled_prefixes(region)):
                return _dialled_in(value, region)
            return value
        return _without_itu_prefix(value) if value[0] == "0" else value
    if value[0] == "+":
        digits = value[1:]
        if digits.isdigit() and digits.isascii() and len(digits) <= _MAX_DIGITS:
            return digits
    if not _WRITTEN.fullmatch(value):
        return None  # an alphanumeric sender id, or nothing at all
    written = value[4:] if value[0] in "tT" else value
    international = written.startswith("+")
    if international:
        written = written[1:]
    digits = written.translate(_NO_SEPARATORS)
    if not _DIGITS.fullmatch(digits):
        return None
    separated = len(digits) != len(written)
    if international:
        # '+44 (0)7700 900123' has a trunk prefix that must go; only a written form can.
        return (_in_region("+" + digits, None) or digits) if separated else digits
    if region and (separated or digits.startswith(_dialled_prefixes(region))):
        return _dialled_in(digits, region)
    return _without_itu_prefix(digits)


def _dialled_in(digits: str, region: str) -> str:
    """The number `digits` dials in `region`, or the digits as written if it is none."""
    international = _without_itu_prefix(digits)
    # '00' is the ITU prefix even where the region's own is another that also starts with
    # 00 ('0011' in Australia, '00' and a carrier code in Brazil): what follows is read as
    # an international number first, and only if it is none, as the region dials it.
    if international != digits:
        found = _in_region("+" + international, None)
        if found is not None:
            return found
    return _in_region(digits, region) or international


def _without_itu_prefix(digits: str) -> str:
    if (
        digits.startswith("00")
        and len(digits) >= 2 + _SHORTEST_INTERNATIONAL
        and digits[2] != "0"  # no country code starts with 0
    ):
        return digits[2:]
    return digits


@functools.lru_cache(maxsize=512)
def _dialled_prefixes(region: str) -> tuple[str, ...]:
    """How a number dialled in `region`, rather than delivered in international digits,
    starts: with 0, or with the region's international prefix where that does not ('810')."""
    import phonenumbers

    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region.upper())
    prefix = None if metadata is None else metadata.international_prefix
    if prefix is not None and prefix.isdigit() and not prefix.startswith("0"):
        return ("0", prefix)
    return ("0",)


@functools.lru_cache(maxsize=8192)
def _in_region(written: str, region: str | None) -> str | None:
    """E.164 digits of `written` read in `region` (None: it starts with '+'), if it is a
    whole number there; None if it is not (a short code, too short or too long)."""
    import phonenumbers

    try:
        number = phonenumbers.parse(written, region.upper() if region else None)
    except phonenumbers.NumberParseException:
        return None
    # Not is_possible_number: a number possible only locally lacks its area code, and no
    # E.164 form of it would be the number meant.
    if phonenumbers.is_possible_number_with_reason(number) != (
        phonenumbers.ValidationResult.IS_POSSIBLE
    ):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
