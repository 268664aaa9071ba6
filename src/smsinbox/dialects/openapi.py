"""The OpenAPI 3.1 document of every route, served at GET /openapi.json.

The mysms requests are generated from the schemas the codec decodes with, so a field added
to a resource appears here by itself; the answers follow the dialect's renderers. The MC5,
EAPI, inbound, admin and operator routes take a handful of parameters fixed by the platforms
they copy, so they are written out by hand. Every dialect answers its own errors with HTTP
200 and a code in the body (a client treats any other status as a transport failure), so
the documented status codes are few; the body's code is what a client reads.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

import smsinbox
from smsinbox.dialects import eapi, mc5, mysms
from smsinbox.dialects.mysms_codec import MAX_INT, FieldType, ListOf, Schema
from smsinbox.push.formats import EVENTS, FORMATS

JsonSchema = dict[str, Any]

INT64: JsonSchema = {"type": "integer", "format": "int64", "minimum": -MAX_INT, "maximum": MAX_INT}
_SCALARS: dict[str, JsonSchema] = {
    "int": INT64,
    "str": {"type": "string"},
    "bool": {"type": "boolean"},
}
# Every request carries these two; a nested object (a sync entry) does not.
_CREDENTIALS = ("apiKey", "authToken")

TEXT = "text/plain; charset=utf-8"
FORM = "application/x-www-form-urlencoded"


def _ref(name: str) -> JsonSchema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: JsonSchema) -> JsonSchema:
    return {"anyOf": [schema, {"type": "null"}]}


def _text_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {TEXT: {"schema": {"type": "string"}}}}


def _json_response(description: str, schema: JsonSchema) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


TOO_LARGE = _text_response("The body is larger than max_body_bytes; refused before parsing.")


# --- mysms ---------------------------------------------------------------------------------


def field_schema(kind: FieldType) -> JsonSchema:
    """The JSON Schema of one codec field: a scalar, a list of them, or a nested object."""
    if isinstance(kind, ListOf):
        return {"type": "array", "items": field_schema(kind.item)}
    if isinstance(kind, Schema):
        properties = {n: field_schema(k) for n, k in kind.fields.items() if n not in _CREDENTIALS}
        return {"type": "object", "properties": properties, "xml": {"name": kind.name}}
    return dict(_SCALARS[kind])


def request_schema(resource: mysms.Resource) -> JsonSchema:
    """A resource's request element, as the codec reads it from JSON or XML."""
    schema = resource.request
    required = ["apiKey", "authToken"] if resource.needs_session else ["apiKey"]
    return {
        "type": "object",
        "properties": {name: field_schema(kind) for name, kind in schema.fields.items()},
        "required": required,
        "xml": {"name": schema.name},
    }


def _answer(**fields: JsonSchema) -> JsonSchema:
    # Closed, so a renderer that grows a field without this document fails the fuzz tests.
    return {"type": "object", "properties": fields, "additionalProperties": False}


def _list(item: JsonSchema) -> JsonSchema:
    return {"type": "array", "items": item}


_INT, _STR, _BOOL = (_SCALARS[k] for k in ("int", "str", "bool"))

# The shapes mysms.render_* produce, named as the platform's XML elements.
MYSMS_OBJECTS: dict[str, JsonSchema] = {
    "userMessageMessage": _answer(
        messageId=_INT,
        address=_STR,
        message=_STR,
        incoming=_BOOL,
        read=_BOOL,
        locked=_BOOL,
        origin={"type": "integer", "enum": sorted(set(mysms.ORIGINS.values()))},
        status={"type": "integer", "enum": sorted(set(mysms.STATUSES.values()))},
        dateSent=_INT,
        dateStatus=_INT,
    ),
    "userMessageConversation": _answer(
        address=_STR,
        contactName=_nullable(_STR),
        snippet=_STR,
        messagesUnread=_INT,
        messagesUnsent=_INT,
        messages=_INT,
        maxMessageId=_INT,
        dateLastMessage=_INT,
    ),
    "userContact": _answer(contactId=_INT, name=_STR, msisdns=_list(_STR)),
    "userDevice": _answer(deviceId=_INT, name=_STR, dateCreated=_INT),
    "userMessageSyncAck": _answer(deviceMessageId=_STR, messageId=_INT),
}
_SYNC_CHANGE: JsonSchema = {
    **MYSMS_OBJECTS["userMessageMessage"],
    "properties": {
        "operation": {"type": "integer", "enum": [0, 1, 2]},
        **MYSMS_OBJECTS["userMessageMessage"]["properties"],
        "deviceMessageId": _nullable(_STR),
    },
}
MYSMS_OBJECTS["userMessageSyncChange"] = _SYNC_CHANGE

_DELETION = {"messagesDeleted": _INT, "lockedMessageIds": _list(_INT)}
_MESSAGES = {"messages": _list(_ref("userMessageMessage"))}

# What each response element carries beside errorCode; present only when errorCode is 0.
MYSMS_ANSWERS: dict[str, dict[str, JsonSchema]] = {
    "userLoginResponse": {"authToken": _STR},
    "userLogoutResponse": {},
    "userMessageGetConversationsResponse": {
        "conversations": _list(_ref("userMessageConversation"))
    },
    "userMessageReadConversationResponse": {},
    "userMessageDeleteConversationResponse": _DELETION,
    "userMessageDeleteConversationListResponse": _DELETION,
    "userMessageDeleteResponse": _DELETION,
    "userMessageDeleteListResponse": _DELETION,
    "userMessageGetMessagesResponse": _MESSAGES,
    "userMessageInsertResponse": {"messageId": _INT},
    "userMessageLockListResponse": {"messagesChanged": _INT},
    "userMessageUnlockListResponse": {"messagesChanged": _INT},
    "userMessageSearchResponse": _MESSAGES,
    "userMessageSendResponse": {"messageId": _INT},
    "userMessageUpdateResponse": {"message": _ref("userMessageMessage")},
    "userMessageSyncResponse": {
        "syncs": _list(_ref("userMessageSyncChange")),
        "syncAcks": _list(_ref("userMessageSyncAck")),
        "syncState": _INT,
        "syncMore": _BOOL,
        "syncResync": _BOOL,
    },
    "userContactGetContactsResponse": {"contacts": _list(_ref("userContact"))},
    "userContactCreateResponse": {"contact": _ref("userContact")},
    "userContactUpdateResponse": {"contact": _ref("userContact")},
    "userContactDeleteResponse": {},
    "userDeviceRegisterResponse": {"deviceId": _INT},
    "userDeviceGetDevicesResponse": {"devices": _list(_ref("userDevice"))},
}

MYSMS_ERROR_CODES = sorted(
    {mysms.OK, mysms.INVALID_REQUEST, mysms.UNAVAILABLE} | {c for _, c in mysms.ERROR_CODES}
)


def response_schema(resource: mysms.Resource) -> JsonSchema:
    answer = _answer(
        errorCode={"type": "integer", "enum": MYSMS_ERROR_CODES},
        **MYSMS_ANSWERS[resource.response],
    )
    return {**answer, "required": ["errorCode"], "xml": {"name": resource.response}}


def _mysms_operation(resource: mysms.Resource, *, rest: bool) -> dict[str, Any]:
    request = _ref(resource.request.name)
    answer = _ref(resource.response)
    media = ["application/json", "application/xml"] if rest else ["application/json"]
    summary = f"mysms {resource.request.name}"
    description = (
        "JSON or XML by Content-Type (XML when the body starts with '<'); the answer "
        "follows Accept, else the request's format."
        if rest
        else "JSON only."
    )
    return {
        "post": {
            "tags": ["mysms"],
            "summary": summary,
            "description": description + " API errors are HTTP 200 with a non-zero errorCode.",
            "operationId": f"{'rest' if rest else 'json'}{resource.path.replace('/', '_')}",
            "requestBody": {
                "required": True,
                "content": {m: {"schema": request} for m in media},
            },
            "responses": {
                "200": {
                    "description": "errorCode 0 and the answer, or only a non-zero errorCode.",
                    "content": {m: {"schema": answer} for m in media},
                },
                "413": TOO_LARGE,
            },
        }
    }


def mysms_paths() -> tuple[dict[str, Any], dict[str, JsonSchema]]:
    paths: dict[str, Any] = {}
    schemas: dict[str, JsonSchema] = dict(MYSMS_OBJECTS)
    for resource in mysms.RESOURCES:
        schemas[resource.request.name] = request_schema(resource)
        schemas[resource.response] = response_schema(resource)
        for base in ("json", "rest"):
            paths[f"/{base}{resource.path}"] = _mysms_operation(resource, rest=base == "rest")
    return paths, schemas


# --- MC5 and EAPI polling ------------------------------------------------------------------


def _polling(
    summary: str,
    tag: str,
    params: dict[str, JsonSchema],
    answer: dict[str, Any],
    name: str,
    required: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """GET with query parameters, or POST with the same as a URL-encoded form; every
    parameter is required unless `required` names the ones that are."""
    needed = list(params) if required is None else list(required)
    query = [
        {"name": n, "in": "query", "required": n in needed, "schema": s} for n, s in params.items()
    ]
    form = {"type": "object", "properties": params, "required": needed}
    common = {"tags": [tag], "summary": summary, "responses": {"200": answer}}
    return {
        "get": {**common, "operationId": f"{name}Get", "parameters": query},
        "post": {
            **common,
            "operationId": f"{name}Post",
            "requestBody": {"required": True, "content": {FORM: {"schema": form}}},
            "responses": {"200": answer, "413": TOO_LARGE},
        },
    }


MC5_STATUSES = sorted({mc5.OK, mc5.INTERNAL_ERROR} | {code for _, code in mc5.STATUS_CODES})
MC5_PAGE: JsonSchema = {
    "type": "object",
    "required": ["status"],
    "additionalProperties": False,
    "properties": {
        "status": {"type": "integer", "enum": MC5_STATUSES},
        "newestMessageTimestamp": INT64,
        "hasMoreMessages": {"type": "boolean"},
        "messages": _list(
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["recipient", "documentId", "timestamp", "text"],
                "properties": {
                    "from": {"type": "string", "description": "absent on outgoing messages"},
                    "recipient": {"type": "string"},
                    "documentId": {"type": "string"},
                    "originDocumentId": _nullable({"type": "string"}),
                    "timestamp": INT64,
                    "text": {"type": "string"},
                },
            }
        ),
    },
}
MC5_PARAMS: dict[str, JsonSchema] = {
    "username": {"type": "string", "minLength": 1},
    "password": {"type": "string", "minLength": 1},
    "since": {"type": "integer", "minimum": 0, "description": "epoch seconds, exclusive"},
}

EAPI_PARAMS: dict[str, JsonSchema] = {
    "username": {"type": "string", "minLength": 1},
    "password": {"type": "string", "minLength": 1},
    "last_retrieved_id": {"type": "integer", "minimum": 0},
}
_EAPI_CODES = ", ".join(
    f"{code} {text or 'data validation failed'}"
    for code, text in sorted({(c, t) for _, c, t in eapi.STATUS_LINES}, key=str)
)
EAPI_ANSWER = _text_response(
    "`0|records to follow|N`, an empty line, then N records "
    "`msg_id|sender|message|received_time|msisdn|referring_batch_id[|encoding]`; or one "
    f"status line `code|description|`: {_EAPI_CODES}, {eapi.INTERNAL_ERROR[0]} "
    f"{eapi.INTERNAL_ERROR[1]}."
)


# --- sending -------------------------------------------------------------------------------

_LOGIN: dict[str, JsonSchema] = {
    "username": {"type": "string", "minLength": 1},
    "password": {"type": "string", "minLength": 1},
}
SEND_SINGLE_PARAMS: dict[str, JsonSchema] = {
    **_LOGIN,
    "text": {"type": "string", "minLength": 1},
    "recipient": {"type": "string", "description": "digits, E.164; optional with replyTo"},
    "replyTo": {"type": "string", "description": "documentId of the message answered"},
    "sender": {
        "type": "string",
        "description": "one of the account's numbers (default: its first)",
    },
    "rotation": {"type": "string", "description": "accepted, not used"},
    "encoding": {"type": "string", "description": "accepted, not used: the text chooses"},
}
SEND_SINGLE_ANSWER = _json_response(
    '`documentId`, `recipient` and `messageStatus` "10" (submitted); or only a non-zero '
    "`status`. Later statuses reach the customer as MC5 status pushes.",
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "documentId": {"type": "string"},
            "recipient": {"type": "string"},
            "messageStatus": {"type": "string", "enum": [mc5.SUBMITTED]},
            "status": {"type": "integer", "enum": MC5_STATUSES},
        },
    },
)
SEND_SMS_PARAMS: dict[str, JsonSchema] = {
    **_LOGIN,
    "message": {"type": "string", "description": "text (7bit), or hex UCS-2 octets (16bit)"},
    "msisdn": {"type": "string", "description": "one or more numbers, comma-separated"},
    "sender": {"type": "string", "description": "one of the account's numbers"},
    "dca": {"type": "string", "enum": ["7bit", "8bit", "16bit"], "description": "8bit: refused"},
    "want_report": {"type": "string", "enum": ["0", "1"]},
    "send_time": {"type": "string", "description": "yyyy-MM-dd HH:mm:ss, account's zone"},
    "routing_group": {"type": "string", "description": "accepted, not used"},
    "source_id": {"type": "string", "description": "accepted, not used"},
    "repliable": {"type": "string", "description": "accepted, not used"},
    "stop_dup_id": {"type": "string", "description": "accepted, not used"},
}
SEND_SMS_ANSWER = _text_response(
    "`0|IN_PROGRESS|batch_id`; or `code|description|`: 23 authentication failure, 24 data "
    "validation failed, 40 temporarily unavailable, 201 maximum batch size exceeded, 22 "
    "internal fatal error."
)
GET_REPORT_PARAMS: dict[str, JsonSchema] = {
    **_LOGIN,
    "batch_id": {"type": "integer", "minimum": 0},
    "msisdn": {"type": "string", "description": "only this recipient's row"},
    "optional_fields": {"type": "string", "description": ", ".join(eapi.REPORT_FIELDS)},
}
GET_REPORT_ANSWER = _text_response(
    "`0|Results to follow`, an empty line, then `msisdn|status_code[|optional fields]` per "
    "message (status codes: "
    + ", ".join(f"{code}" for code in sorted(set(eapi.REPORT_CODES.values())))
    + "); or `code|description|`."
)


def sending_paths() -> dict[str, Any]:
    paths = {
        "/services/rest/message/sendSingle2": _polling(
            "MC5 Send Single Message", "mc5", SEND_SINGLE_PARAMS, SEND_SINGLE_ANSWER,
            "mc5SendSingle2", ("username", "password", "text"),
        )
    }  # fmt: skip
    for prefix in ("/eapi", ""):
        tail = prefix.replace("/", "_")
        paths[f"{prefix}/submission/send_sms/2/2.0"] = _polling(
            "EAPI send_sms: one message to one or more recipients, as one batch", "eapi",
            SEND_SMS_PARAMS, SEND_SMS_ANSWER, f"eapiSendSms{tail}",
            ("username", "password", "message", "msisdn"),
        )  # fmt: skip
        paths[f"{prefix}/status_reports/get_report/2/2.0"] = _polling(
            "EAPI get_report: the status of each message of a batch", "eapi",
            GET_REPORT_PARAMS, GET_REPORT_ANSWER, f"eapiGetReport{tail}",
            ("username", "password", "batch_id"),
        )  # fmt: skip
    return paths


# --- upstream delivery ---------------------------------------------------------------------

INBOUND_PARAMS: dict[str, JsonSchema] = {
    "from": {"type": "string", "description": "sender: digits, or alphanumeric (Kannel %p)"},
    "to": {"type": "string", "description": "recipient msisdn (Kannel %P)"},
    "text": {"type": "string", "description": "the message octets (Kannel %b)"},
    "hex": {"type": "string", "description": "the message as hex, instead of text"},
    "encoding": {"type": "string", "enum": ["7bit", "8bit", "16bit"]},
    "coding": {"type": "string", "enum": ["0", "1", "2"], "description": "Kannel %c"},
    "charset": {"type": "string", "description": "Kannel %C"},
    "id": {"type": "string", "description": "the upstream's message id, for de-duplication"},
    "ref": {"type": "string", "description": "id of the message this one replies to"},
    "time": {"type": "string", "description": "sender's time, epoch seconds (Kannel %t)"},
}
_STORED_HEADERS = {
    name: {"schema": {"type": "string"}}
    for name in ("X-Smsinbox-Outcome", "X-Smsinbox-Id", "X-Smsinbox-Unrouted-Id")
}
INBOUND_RESPONSES: dict[str, Any] = {
    "200": {
        "description": "Stored (or a duplicate, or kept unrouted); the body is empty.",
        "headers": _STORED_HEADERS,
        "content": {"text/plain": {"schema": {"type": "string", "maxLength": 0}}},
    },
    "400": _text_response("The message is invalid; retrying cannot help."),
    "401": _text_response("Missing or unknown upstream token."),
    "413": TOO_LARGE,
    "415": _text_response("The body is not a URL-encoded form."),
    "429": _text_response("Too many failed logins from this address; see Retry-After."),
    "503": _text_response("The store is unavailable; retry after Retry-After seconds."),
}


def inbound_paths() -> dict[str, Any]:
    query = [{"name": n, "in": "query", "schema": s} for n, s in INBOUND_PARAMS.items()]
    common = {
        "tags": ["upstream"],
        "summary": "Deliver one incoming SMS (HTTP upstream, Kannel get-url/post-url)",
        "security": [{"upstreamBearer": []}, {"upstreamToken": []}],
        "responses": INBOUND_RESPONSES,
    }
    form = {"type": "object", "properties": INBOUND_PARAMS}
    return {
        "/inbound/sms": {
            "get": {**common, "operationId": "inboundSmsGet", "parameters": query},
            "post": {
                **common,
                "operationId": "inboundSmsPost",
                "requestBody": {"content": {FORM: {"schema": form}}},
            },
        }
    }


# --- operator API --------------------------------------------------------------------------

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}


def _admin_errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Invalid input.",
        401: "Missing or wrong admin token.",
        404: "No such account or endpoint, or the admin API is disabled (no admin_token).",
        409: "Already exists.",
        413: "The body is larger than max_body_bytes.",
        429: "Too many failed logins from this address; see Retry-After.",
        503: "The store is unavailable.",
    }
    return {
        str(status): TOO_LARGE if status == 413 else _json_response(reasons[status], _ERROR)
        for status in (401, 404, 429, 503, *statuses)
    }


ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "id": INT64,
        "username": {"type": "string"},
        "url": {"type": "string"},
        "format": {"type": "string"},
        "events": _list({"type": "string"}),
        "enabled": {"type": "boolean"},
        "disabledReason": _nullable({"type": "string"}),
        "secret": _nullable({"type": "string"}),
    },
}
ATTEMPT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "deliveryId": INT64,
        "messageId": _nullable(INT64),
        "url": {"type": "string"},
        "state": {"type": "string"},
        "attemptedAt": INT64,
        "httpStatus": _nullable({"type": "integer"}),
        "latencyMs": _nullable({"type": "integer"}),
        "error": _nullable({"type": "string"}),
    },
}
_USERNAME = {"name": "username", "in": "path", "required": True, "schema": {"type": "string"}}


def _json_body(properties: dict[str, JsonSchema], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def admin_paths() -> dict[str, Any]:
    base = "/admin/accounts/{username}/push"
    tags = {"tags": ["admin"], "security": [{"adminBearer": []}]}
    return {
        base: {
            "parameters": [_USERNAME],
            "get": {
                **tags,
                "operationId": "adminListEndpoints",
                "summary": "The account's push endpoints",
                "responses": {
                    "200": _json_response(
                        "The endpoints.",
                        {
                            "type": "object",
                            "properties": {"endpoints": _list(ENDPOINT)},
                            "additionalProperties": False,
                        },
                    ),
                    **_admin_errors(),
                },
            },
            "post": {
                **tags,
                "operationId": "adminAddEndpoint",
                "summary": "Add a push endpoint",
                "requestBody": _json_body(
                    {
                        "url": {"type": "string", "format": "uri"},
                        "format": {"type": "string", "enum": list(FORMATS)},
                        "events": _list({"type": "string", "enum": list(EVENTS)}),
                    },
                    ["url"],
                ),
                "responses": {
                    "201": _json_response("The new endpoint.", ENDPOINT),
                    **_admin_errors(400, 409, 413),
                },
            },
        },
        "/admin/push/{endpoint_id}": {
            "delete": {
                **tags,
                "operationId": "adminRemoveEndpoint",
                "summary": "Remove an endpoint and its pending deliveries",
                "parameters": [
                    {
                        "name": "endpoint_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 0},
                    }
                ],
                "responses": {
                    "200": _json_response(
                        "Removed.",
                        {"type": "object", "properties": {"removed": INT64}},
                    ),
                    **_admin_errors(400),
                },
            }
        },
        base + "/deliveries": {
            "parameters": [_USERNAME],
            "get": {
                **tags,
                "operationId": "adminListAttempts",
                "summary": "The push attempt log",
                "parameters": [
                    {"name": "failed", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _json_response(
                        "The attempts, newest first.",
                        {
                            "type": "object",
                            "properties": {"attempts": _list(ATTEMPT)},
                            "additionalProperties": False,
                        },
                    ),
                    **_admin_errors(),
                },
            },
        },
        base + "/replay": {
            "parameters": [_USERNAME],
            "post": {
                **tags,
                "operationId": "adminReplay",
                "summary": "Queue again every delivery since a time",
                "requestBody": _json_body(
                    {
                        "since": {
                            "anyOf": [{"type": "integer"}, {"type": "string"}],
                            "description": "epoch seconds, or a date (YYYY-MM-DD)",
                        }
                    },
                    [],
                ),
                "responses": {
                    "200": _json_response(
                        "How many deliveries were queued.",
                        {"type": "object", "properties": {"queued": INT64}},
                    ),
                    **_admin_errors(400, 413),
                },
            },
        },
    }


def ops_paths() -> dict[str, Any]:
    def get(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {
            "get": {
                "tags": ["operations"],
                "operationId": operation_id,
                "summary": summary,
                "responses": responses,
            }
        }

    return {
        "/healthz": get("healthz", "Liveness", {"200": _text_response("ok")}),
        "/readyz": get(
            "readyz",
            "Readiness: the database answers",
            {"200": _text_response("ready"), "503": _text_response("database unavailable")},
        ),
        "/metrics": get(
            "metrics",
            "Prometheus text exposition",
            {"200": {"description": "Metrics.", "content": {"text/plain": {}}}},
        ),
        "/openapi.json": get(
            "openapi",
            "This document",
            {"200": {"description": "OpenAPI 3.1.", "content": {"application/json": {}}}},
        ),
    }


# --- the document --------------------------------------------------------------------------


@functools.cache
def document() -> dict[str, Any]:
    """The whole OpenAPI document; it depends on the code only, so it is built once."""
    paths, schemas = mysms_paths()
    check = "MC5 Check messages: incoming messages after `since`, 100 a page"
    check_all = "MC5 Check all messages: incoming and outgoing after `since`"
    mc5_answer = _json_response("`status` 0 and a page, or only a non-zero `status`.", MC5_PAGE)
    paths["/services/rest/user/messages"] = _polling(
        check, "mc5", MC5_PARAMS, mc5_answer, "mc5CheckMessages"
    )
    paths["/services/rest/user/allMessages"] = _polling(
        check_all, "mc5", MC5_PARAMS, mc5_answer, "mc5CheckAllMessages"
    )
    for prefix in ("/eapi", ""):
        for version, fields in (("1.1", "seven fields"), ("1.0", "six fields, no encoding")):
            name = f"eapiGetInbox{version.replace('.', '')}{prefix.replace('/', '_')}"
            paths[f"{prefix}/reception/get_inbox/1/{version}"] = _polling(
                f"EAPI get_inbox {version} ({fields}): messages after last_retrieved_id",
                "eapi",
                EAPI_PARAMS,
                EAPI_ANSWER,
                name,
            )
    paths.update(sending_paths())
    paths.update(inbound_paths())
    paths.update(admin_paths())
    paths.update(ops_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "smsinbox",
            "version": smsinbox.__version__,
            "description": (
                "A self-hostable SMS inbox: the MC5, EAPI and mysms APIs over one store, "
                "the upstream delivery endpoint, the operator's API and probes."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "adminBearer": {"type": "http", "scheme": "bearer"},
                "upstreamBearer": {"type": "http", "scheme": "bearer"},
                "upstreamToken": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
    }


async def openapi_json(request: Request) -> Response:
    """GET /openapi.json — the OpenAPI document of every route."""
    body = json.dumps(document(), ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, media_type="application/json")
