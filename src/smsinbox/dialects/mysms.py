"""mysms UserMessageEndpoint (seed 002): POST under /json/... (JSON) and /rest/... (JSON or XML).

Every answer is HTTP 200 with `errorCode` (0 = OK). Each resource is a request schema, a
response element and a handler that calls one core function.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from smsinbox.core.api import Core
from smsinbox.core.caller import INTERNAL, Caller
from smsinbox.core.sessions import Principal
from smsinbox.core.sync import (
    ChangeKind,
    DeviceChange,
    DeviceDelete,
    DeviceInsert,
    DeviceUpdate,
    SyncResult,
)
from smsinbox.dialects.mysms_codec import CodecError, ListOf, Schema, decode, encode
from smsinbox.errors import (
    AccessDenied,
    DomainError,
    InvalidApiKey,
    InvalidAuthToken,
    InvalidInput,
    NotFound,
    SenderWithoutNumber,
    StoreUnavailable,
    TooManyRequests,
    UnknownDevice,
)
from smsinbox.models import Contact, Conversation, Device, Direction, Message, MessageStatus

log = logging.getLogger("smsinbox.mysms")

OK = 0
INVALID_REQUEST = 2
UNAVAILABLE = 99
# Order matters: a subclass must come before its base class.
ERROR_CODES: list[tuple[type[DomainError], int]] = [
    (InvalidInput, 2),  # MissingParameter included
    (NotFound, 2),
    (AccessDenied, 97),
    (TooManyRequests, 98),
    (StoreUnavailable, 99),
    (InvalidAuthToken, 100),
    (UnknownDevice, 105),
    (SenderWithoutNumber, 113),
    (InvalidApiKey, 600),
]

# Who sent the request being handled, for the login's brute-force guard; set by endpoint()
# so that handlers keep their (services, principal, body) shape.
CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("mysms_caller", default=INTERNAL)

ORIGINS = {"sim": 0, "platform": 1, "app": 2}
STATUSES = {
    MessageStatus.RECEIVED: 0, MessageStatus.RETRIEVED: 0, MessageStatus.PENDING: 1,
    MessageStatus.SCHEDULED: 1, MessageStatus.COMPLETE: 2, MessageStatus.FAILED: 3,
    MessageStatus.SENDING: 4, MessageStatus.SENT: 2, MessageStatus.DELIVERED: 2,
    MessageStatus.UNDELIVERABLE: 3, MessageStatus.EXPIRED: 3, MessageStatus.REJECTED: 3,
}  # fmt: skip


def error_code(error: DomainError) -> int:
    for kind, code in ERROR_CODES:
        if isinstance(error, kind):
            return code
    return UNAVAILABLE


# --- renderings ----------------------------------------------------------------------------


def render_message(message: Message) -> dict[str, Any]:
    return {
        "messageId": message.id,
        "address": message.counterpart,
        "message": message.text,
        "incoming": message.direction is Direction.INCOMING,
        "read": message.read,
        "locked": message.locked,
        "origin": ORIGINS.get(message.origin, 1),
        "status": STATUSES.get(message.status, 0),
        "dateSent": message.sent_at or message.received_at,
        "dateStatus": message.status_at or message.received_at,
    }


def render_conversation(conversation: Conversation, contact_name: str | None) -> dict[str, Any]:
    return {
        "address": conversation.counterpart,
        "contactName": contact_name,
        "snippet": conversation.snippet,
        "messagesUnread": conversation.unread_count,
        "messagesUnsent": conversation.unsent_count,
        "messages": conversation.message_count,
        "maxMessageId": conversation.last_message_id,
        "dateLastMessage": conversation.last_message_at,
    }


def render_contact(contact: Contact) -> dict[str, Any]:
    return {"contactId": contact.id, "name": contact.name, "msisdns": list(contact.msisdns)}


def render_device(device: Device) -> dict[str, Any]:
    return {"deviceId": device.id, "name": device.name, "dateCreated": device.created_at}


# --- resources -----------------------------------------------------------------------------

Handler = Callable[[Core, Principal | None, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Resource:
    path: str
    request: Schema
    response: str
    handler: Handler
    needs_session: bool = True


RESOURCES: list[Resource] = []


def resource(
    path: str, request: Schema, response: str, *, needs_session: bool = True
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        RESOURCES.append(Resource(path, request, response, handler, needs_session))
        return handler

    return register


def _principal(who: Principal | None) -> Principal:
    assert who is not None
    return who


@resource("/user/login", Schema("userLoginRequest", msisdn="int", password="str"),  # noqa: S106
          "userLoginResponse", needs_session=False)  # fmt: skip
async def login(services: Core, _: Principal | None, body: dict[str, Any]) -> dict[str, Any]:
    msisdn = body.get("msisdn")
    token = await services.sessions.login(
        body.get("apiKey"),
        None if msisdn is None else str(msisdn),
        body.get("password"),
        CALLER.get(),
    )
    return {"authToken": token}


@resource("/user/logout", Schema("userLogoutRequest"), "userLogoutResponse", needs_session=False)
async def logout(services: Core, _: Principal | None, body: dict[str, Any]) -> dict[str, Any]:
    await services.sessions.logout(body.get("apiKey"), body.get("authToken"))
    return {}


@resource("/user/message/conversations/get",
          Schema("userMessageGetConversationsRequest", offset="int", limit="int"),
          "userMessageGetConversationsResponse")  # fmt: skip
async def conversations_get(s: Core, who: Principal | None, body: dict[str, Any]) -> dict[str, Any]:
    found = await s.mailbox.conversations(
        _principal(who), offset=body.get("offset"), limit=body.get("limit")
    )
    return {"conversations": [render_conversation(c, name) for c, name in found]}


@resource("/user/message/conversations/read",
          Schema("userMessageReadConversationRequest", address="str"),
          "userMessageReadConversationResponse")  # fmt: skip
async def conversations_read(
    s: Core, who: Principal | None, body: dict[str, Any]
) -> dict[str, Any]:
    await s.mailbox.read_conversation(_principal(who), body.get("address"))
    return {}


def _deletion(deleted: int, kept: list[int]) -> dict[str, Any]:
    return {"messagesDeleted": deleted, "lockedMessageIds": kept}


@resource("/user/message/conversations/delete",
          Schema("userMessageDeleteConversationRequest", address="str"),
          "userMessageDeleteConversationResponse")  # fmt: skip
async def conversations_delete(
    s: Core, who: Principal | None, body: dict[str, Any]
) -> dict[str, Any]:
    address = body.get("address")
    result = await s.mailbox.delete_conversations(_principal(who), [address] if address else [])
    return _deletion(result.deleted, result.kept_locked)


@resource("/user/message/conversations/delete/list",
          Schema("userMessageDeleteConversationListRequest", addresses=ListOf("str")),
          "userMessageDeleteConversationListResponse")  # fmt: skip
async def conversations_delete_list(
    s: Core, who: Principal | None, body: dict[str, Any]
) -> dict[str, Any]:
    result = await s.mailbox.delete_conversations(_principal(who), body.get("addresses", []))
    return _deletion(result.deleted, result.kept_locked)


@resource("/user/message/delete", Schema("userMessageDeleteRequest", messageId="int"),
          "userMessageDeleteResponse")  # fmt: skip
async def message_delete(s: Core, who: Principal | None, body: dict[str, Any]) -> dict[str, Any]:
    ids = [body["messageId"]] if "messageId" in body else []
    result = await s.mailbox.delete_messages(_principal(who), ids)
    return _deletion(result.deleted, result.kept_locked)


@resource("/user/message/delete/list",
          Schema("userMessageDeleteListRequest", messageIds=ListOf("int")),
          "userMessageDeleteListResponse")  # fmt: skip
async def message_delete_list(
    s: Core, who: Principal | None, body: dict[str, Any]
) -> dict[str, Any]:
    result = await s.mailbox.delete_messages(_principal(who), body.get("messageIds", []))
    return _deletion(result.deleted, result.kept_locked)


@resource("/user/message/get/by/conversation",
          Schema("userMessageGetMessagesRequest", address="str", offset="int", limit="int"),
          "userMessageGetMessagesResponse")  # fmt: skip
async def get_by_conversation(
    s: Core, who: Principal | None, body: dict[str, Any]
) -> dict[str, Any]:
    found = await s.mailbox.conversation_messages(
        _principal(who), body.get("address"), offset=body.get("offset"), limit=body.get("limit")
    )
    return {"messages": [render_message(m) for m in found]}


@resource("/user/message/insert",
          Schema("userMessageInsertRequest", address="str", message="str", incoming="bool",
                 read="bool", dateSent="int", deviceId="int", deviceMessageId="str"),
          "userMessageInsertResponse")  # fmt: skip
async def message_insert(s: Core, who: Principal | None, body: dict[str, Any]) -> dict[str, Any]:
    message_id, _ = await s.mailbox.insert(
        _principal(who),
        body.get("address"),
        body.get("message"),
        incoming=body.get("incoming", True),
        date_sent=body.get("dateSent"),
        read=body.get("read", False),
        device_id=body.get("deviceId"),
        device_message_id=body.get("deviceMessageId"),
    )
    return {"messageId": message_id}


async def _lock(
    s: Core, who: Principal | None, body: dict[str, Any], locked: bool
) -> dict[str, Any]:
    changed = await s.mailbox.lock(_principal(who), body.get("messageIds", []), locked)
    return {"messagesChanged": changed}


@resource("/user/message/lock/list", Schema("userMessageLockListRequest", messageIds=ListOf("int")),
          "userMessageLockListResponse")  # fmt: skip
async def lock_list(s: Core, who: Principal | None, body: dict[str, Any]) -> dict[str, Any]:
    return await _lock(s, who, body, True)


@resource("/user/message/unlock/list",
          Schema("userMessageUnlockListRequest", messageIds=ListOf("int")),
          "userMessageUnlockListResponse")  # fmt: skip
async def unlock_list(s: Core, who: Principal | None, body: dict[str, Any]) -> dict[str, Any]:
    return await _lock(s, who, body, False)


@resource("/user/message/search",
          Schema("userMessageSearchRequest", query="str", address="str", locked="bool",
                 limit="int"),
          "userMessageSearchResponse")  # fmt: skip
async def search(s: Core, who: Principal | None, body: dict[str, Any]) -> dict[str, Any]:
    found = await s.mailbox.search(
        _principal(who),
        body.get("query"),
        address=body.get("address"),
        locked=body.get("locked"),
        limit=body.get("limit"),
    )
    return {"messages": [render_message(m) for m in found]}


@resource("/user/message/send",
          Schema("userMessageSendRequest", recipient="int", message="str", dateSendOn="int",
                 instantOnly="bool", deviceId="int"),
          "userMessageSendResponse")  # fmt: skip
async def send(s: Core, who: Principal | None, body: dict[str, Any]) -> dict[str, Any]:
    message_id = await s.mailbox.send(
        _principal(who),
        body.get("recipient"),
        body.get("message"),
        send_on=body.get("dateSendOn"),
        device_id=body.get("deviceId"),
    )
    return {"messageId": message_id}


@resource("/user/message/update",
          Schema("userMessageUpdateRequest", messageId="int", read="bool", locked="bool"),
          "userMessageUpdateResponse")  # fmt: skip
async def update(s: Core, who: Principal | None, body: dict[str, Any]) -> dict[str, Any]:
    message = await s.mailbox.update(
        _principal(who), body.get("messageId"), read=body.get("read"), locked=body.get("locked")
    )
    return {"message": render_message(message)}


SYNC_ENTRY = Schema("userMessageSync", operation="int", messageId="int", deviceMessageId="str",
                    address="str", message="str", incoming="bool", read="bool", locked="bool",
                    origin="int", status="int", dateSent="int", dateStatus="int")  # fmt: skip


# The wire's operation numbers.
UPDATE, INSERT, DELETE = 0, 1, 2
OPERATIONS = {ChangeKind.UPDATED: UPDATE, ChangeKind.CREATED: INSERT, ChangeKind.DELETED: DELETE}


def render_changes(result: SyncResult) -> list[dict[str, Any]]:
    """The changes as the device receives them: each message as render_message shows it,
    with the operation and the device's own id for it. Written out in one comprehension, no
    call per change: a sync renders a thousand (see SyncResult)."""
    operations, origins, statuses, incoming = OPERATIONS, ORIGINS, STATUSES, Direction.INCOMING
    return [
        {"operation": operations[kind], "messageId": message_id, "address": counterpart,
         "message": text, "incoming": direction is incoming, "read": read, "locked": locked,
         "origin": origins.get(origin, 1), "status": statuses.get(status, 0),
         "dateSent": sent_at or received_at, "dateStatus": status_at or received_at,
         "deviceMessageId": device_message_id}
        for kind, (message_id, direction, counterpart, text, received_at, sent_at, status,
                   status_at, origin, read, locked, _, _, _, device_message_id)
        in zip(result.kinds, result.messages, strict=True)
    ]  # fmt: skip


def device_change(entry: dict[str, Any]) -> DeviceChange:
    """One entry of a request's `syncs`: a change the device made."""
    operation = entry.get("operation")
    device_message_id = entry.get("deviceMessageId")
    if operation == INSERT:
        return DeviceInsert(
            device_message_id,
            entry.get("address"),
            entry.get("message"),
            incoming=entry.get("incoming", True),
            sent_at=entry.get("dateSent"),
            read=entry.get("read", False),
        )
    if operation == UPDATE:
        return DeviceUpdate(
            entry.get("messageId"),
            device_message_id,
            read=entry.get("read"),
            locked=entry.get("locked"),
        )
    if operation == DELETE:
        return DeviceDelete(entry.get("messageId"), device_message_id)
    raise InvalidInput("operation must be 0 (update), 1 (insert) or 2 (delete)", "operation")


@resource("/user/message/sync",
          Schema("userMessageSyncRequest", deviceId="int", syncs=ListOf(SYNC_ENTRY),
                 syncAcks=ListOf("int"), syncLimit="int", syncUnreliable="bool",
                 syncInitial="bool"),
          "userMessageSyncResponse")  # fmt: skip
async def sync(s: Core, who: Principal | None, body: dict[str, Any]) -> dict[str, Any]:
    result = await s.sync.sync(
        _principal(who),
        body.get("deviceId"),
        device_changes=[device_change(entry) for entry in body.get("syncs", [])],
        acks=body.get("syncAcks", []),
        limit=body.get("syncLimit"),
        initial=body.get("syncInitial", False),
    )
    return {
        "syncs": render_changes(result),
        "syncAcks": [{"deviceMessageId": d, "messageId": m} for d, m in result.acks],
        "syncState": result.state,
        "syncMore": result.more,
        "syncResync": result.resync,
    }


@resource("/user/contact/contacts/get", Schema("userContactGetContactsRequest"),
          "userContactGetContactsResponse")  # fmt: skip
async def contacts_get(s: Core, who: Principal | None, body: dict[str, Any]) -> dict[str, Any]:
    return {"contacts": [render_contact(c) for c in await s.contacts.list(_principal(who))]}


@resource("/user/contact/create",
          Schema("userContactCreateRequest", name="str", msisdns=ListOf("str")),
          "userContactCreateResponse")  # fmt: skip
async def contact_create(s: Core, who: Principal | None, body: dict[str, Any]) -> dict[str, Any]:
    contact = await s.contacts.create(_principal(who), body.get("name"), body.get("msisdns", []))
    return {"contact": render_contact(contact)}


@resource("/user/contact/update",
          Schema("userContactUpdateRequest", contactId="int", name="str", msisdns=ListOf("str")),
          "userContactUpdateResponse")  # fmt: skip
async def contact_update(s: Core, who: Principal | None, body: dict[str, Any]) -> dict[str, Any]:
    contact = await s.contacts.update(
        _principal(who), body.get("contactId"), name=body.get("name"), msisdns=body.get("msisdns")
    )
    return {"contact": render_contact(contact)}


@resource("/user/contact/delete", Schema("userContactDeleteRequest", contactId="int"),
          "userContactDeleteResponse")  # fmt: skip
async def contact_delete(s: Core, who: Principal | None, body: dict[str, Any]) -> dict[str, Any]:
    await s.contacts.delete(_principal(who), body.get("contactId"))
    return {}


@resource("/user/device/register", Schema("userDeviceRegisterRequest", name="str"),
          "userDeviceRegisterResponse")  # fmt: skip
async def device_register(s: Core, who: Principal | None, body: dict[str, Any]) -> dict[str, Any]:
    device = await s.devices.register(_principal(who), body.get("name"))
    return {"deviceId": device.id}


@resource("/user/device/devices/get", Schema("userDeviceGetDevicesRequest"),
          "userDeviceGetDevicesResponse")  # fmt: skip
async def devices_get(s: Core, who: Principal | None, body: dict[str, Any]) -> dict[str, Any]:
    return {"devices": [render_device(d) for d in await s.devices.list(_principal(who))]}


# --- the HTTP side -------------------------------------------------------------------------


def _negotiate(request: Request, body: bytes, *, rest: bool) -> tuple[bool, bool]:
    """(request body is XML, answer in XML). /json is always JSON."""
    if not rest:
        return False, False
    content_type = request.headers.get("content-type", "").lower()
    if "xml" in content_type:
        xml_in = True
    elif "json" in content_type:
        xml_in = False
    else:
        xml_in = body.lstrip().startswith(b"<")
    accept = request.headers.get("accept", "").lower()
    if "xml" in accept and "json" not in accept:
        return xml_in, True
    if "json" in accept and "xml" not in accept:
        return xml_in, False
    return xml_in, xml_in


def endpoint(spec: Resource, *, rest: bool) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        services: Core = request.app.state.services
        raw = await request.body()
        xml_in, xml_out = _negotiate(request, raw, rest=rest)
        CALLER.set(Caller.of("mysms", request.client))
        try:
            body = decode(raw, xml=xml_in, schema=spec.request)
            who = None
            if spec.needs_session:
                who = await services.sessions.authenticate(
                    body.get("apiKey"), body.get("authToken")
                )
            payload = {"errorCode": OK, **await spec.handler(services, who, body)}
        except CodecError as error:
            payload = {"errorCode": INVALID_REQUEST}
            log.debug("%s: %s", spec.path, error)
        except DomainError as error:
            payload = {"errorCode": error_code(error)}
        except Exception:
            log.exception("%s failed", spec.path)
            payload = {"errorCode": UNAVAILABLE}
        media = "application/xml" if xml_out else "application/json"
        return Response(encode(payload, xml=xml_out, element=spec.response), media_type=media)

    handle.__name__ = "mysms_" + spec.path.strip("/").replace("/", "_")
    handle.__doc__ = f"POST /json{spec.path}, /rest{spec.path} — mysms {spec.request.name}."
    return handle


def routes() -> list[Route]:
    return [
        Route(f"/{base}{spec.path}", endpoint(spec, rest=base == "rest"), methods=["POST"])
        for spec in RESOURCES
        for base in ("json", "rest")
    ]
