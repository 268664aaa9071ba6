"""The mysms wire codec: JSON or XML bodies, typed by one small schema per request element.

The platform's XML is JAXB's: the root element names the request (`userMessageSendRequest`),
each field is a child element, a list is the same element repeated, a nested object is an
element with children. Without a schema a one-item list and a scalar look alike in XML, so
both formats are decoded through the request's schema, into the same typed dictionary.
Every XML body goes through defusedxml: entity expansion and external entities are refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Union
from xml.etree.ElementTree import Element, SubElement, tostring

import defusedxml.ElementTree as safe_xml
import orjson
from defusedxml import DefusedXmlException

# A field is a scalar kind, a nested schema, or a list of either.
Scalar = str  # "int" | "str" | "bool"
FieldType = Union[Scalar, "Schema", "ListOf"]

MAX_INT = 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]{1,19}")
# Characters XML 1.0 cannot carry at all, not even as references: an answer holding one
# would not parse, so message text sends them as U+FFFD.
_NOT_IN_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class CodecError(ValueError):
    """The body cannot be read as the request it should be."""


class ListOf:
    def __init__(self, item: FieldType) -> None:
        self.item = item


class Schema:
    """The fields of one request element (or of an object nested in one)."""

    def __init__(self, name: str, /, **fields: FieldType) -> None:
        self.name = name
        self.fields: dict[str, FieldType] = {"apiKey": "str", "authToken": "str", **fields}


def decode(body: bytes, *, xml: bool, schema: Schema) -> dict[str, Any]:
    """The request's fields that are present, typed; absent fields are simply missing."""
    if not body.strip():
        return {}
    if xml:
        try:
            root = safe_xml.fromstring(body, forbid_dtd=True)
        except (DefusedXmlException, safe_xml.ParseError, ValueError) as error:
            raise CodecError(f"body is not acceptable XML: {error}") from None
        return _from_element(root, schema)
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise CodecError("body is not valid JSON") from None
    if not isinstance(document, dict):
        raise CodecError("body must be a JSON object")
    return _from_mapping(document, schema)


def _from_mapping(document: Mapping[str, Any], schema: Schema) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, kind in schema.fields.items():
        if name in document and document[name] is not None:
            values[name] = _coerce(document[name], kind, name)
    return values


def _coerce(value: Any, kind: FieldType, name: str) -> Any:
    if isinstance(kind, ListOf):
        if not isinstance(value, list):
            value = [value]
        return [_coerce(item, kind.item, name) for item in value if item is not None]
    if isinstance(kind, Schema):
        if not isinstance(value, dict):
            raise CodecError(f"{name} must be an object")
        return _from_mapping(value, kind)
    return _scalar(value, kind, name)


def _scalar(value: Any, kind: str, name: str) -> Any:
    if kind == "str":
        if isinstance(value, bool | dict | list):
            raise CodecError(f"{name} must be a string")
        if isinstance(value, str) and "\x00" in value:
            # XML cannot carry a NUL and PostgreSQL cannot store one (a search for it would
            # fail as an unavailable store): JSON gets the answer XML gets.
            raise CodecError(f"{name} must not contain NUL characters")
        return str(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise CodecError(f"{name} must be true or false")
    # int
    if isinstance(value, bool):
        raise CodecError(f"{name} must be an integer")
    if isinstance(value, str):
        text = value.strip()
        # ASCII digits only: str.isdigit also admits "²" (which int() refuses) and "١٢".
        if not _INTEGER.fullmatch(text):
            raise CodecError(f"{name} must be an integer")
        value = int(text)
    if not isinstance(value, int) or abs(value) > MAX_INT:
        raise CodecError(f"{name} must be a 64-bit integer")
    return value


def _from_element(element: Element, schema: Schema) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for child in element:
        kind = schema.fields.get(child.tag)
        if kind is None:
            continue
        if isinstance(kind, ListOf):
            values.setdefault(child.tag, []).append(_element_value(child, kind.item))
        else:
            values[child.tag] = _element_value(child, kind)
    return values


def _element_value(element: Element, kind: FieldType) -> Any:
    if isinstance(kind, Schema):
        return _from_element(element, kind)
    if isinstance(kind, ListOf):
        raise CodecError(f"{element.tag}: nested lists are not supported")
    return _scalar(element.text or "", kind, element.tag)


def encode(payload: Mapping[str, Any], *, xml: bool, element: str) -> bytes:
    """A response body; `element` names the XML root (`userMessageSendResponse`)."""
    if not xml:
        # The bytes json.dumps(ensure_ascii=False, compact) writes, several times faster.
        return orjson.dumps(payload)
    root = Element(element)
    _fill(root, payload)
    # A parser reads a raw CR as LF; written as a reference it survives. ElementTree writes
    # no CR of its own, so every CR here is message text.
    text = tostring(root, encoding="unicode").replace("\r", "&#13;")
    return b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>' + text.encode()


def _fill(parent: Element, payload: Mapping[str, Any]) -> None:
    for name, value in payload.items():
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            child = SubElement(parent, name)
            if isinstance(item, Mapping):
                _fill(child, item)
            elif isinstance(item, bool):
                child.text = "true" if item else "false"
            else:
                child.text = _NOT_IN_XML.sub("\ufffd", str(item))
