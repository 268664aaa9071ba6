"""The send APIs over a real socket: MC5 sendSingle2 and EAPI send_sms / get_report, their
exact answers and status codes, and what the messages sent become."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import AsyncIterator

import httpx
import pytest

from smsinbox.core.ingest import RawInbound
from smsinbox.models import MessageStatus
from smsinbox.services import Services
from tests.conftest import LiveServer

SEND_SINGLE = "/services/rest/message/sendSingle2"
SEND_SMS = "/eapi/submission/send_sms/2/2.0"
GET_REPORT = "/eapi/status_reports/get_report/2/2.0"
ALICE, ALICE_2, BOB = "447700900001", "447700900002", "447700900003"
OUTSIDE, OUTSIDE_2 = "33612345678", "4915112345"
ALICE_LOGIN = {"username": "alice", "password": "alice-pw"}


@pytest.fixture
async def http(services: Services, live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    await services.accounts.add("alice", "alice-pw", msisdns=(ALICE, ALICE_2))
    await services.accounts.add("bob", "bob-pw", msisdns=(BOB,))
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as client:
        yield client


async def latest(services: Services, username: str) -> list[tuple[str, str, str, MessageStatus]]:
    return [
        (message.sender, message.recipient, message.text, message.status)
        for message in await services.store.list_recent_messages(username, 10)
    ]


# --- MC5 sendSingle2 -------------------------------------------------------------------------


async def test_send_single2_answers_the_document_id_and_submitted(
    services: Services, http: httpx.AsyncClient
) -> None:
    answer = await http.get(
        SEND_SINGLE, params={**ALICE_LOGIN, "recipient": "+44 7700 900003", "text": "Hi Bob"}
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert list(body) == ["documentId", "recipient", "messageStatus"]
    assert body["recipient"] == BOB and body["messageStatus"] == "10"
    assert re.fullmatch(r"\d+", body["documentId"])
    # Bob is on this server: the message is in his inbox at once, and complete for alice.
    assert (await latest(services, "bob"))[0][:3] == (ALICE, BOB, "Hi Bob")
    assert (await latest(services, "alice"))[0] == (ALICE, BOB, "Hi Bob", MessageStatus.COMPLETE)


async def test_send_single2_to_a_number_outside_queues_it_for_an_smsc(
    services: Services, http: httpx.AsyncClient
) -> None:
    answer = await http.post(
        SEND_SINGLE,
        data={**ALICE_LOGIN, "recipient": OUTSIDE, "text": "Bonjour", "sender": ALICE_2},
    )
    assert answer.json()["messageStatus"] == "10"
    assert (await latest(services, "alice"))[0] == (
        ALICE_2, OUTSIDE, "Bonjour", MessageStatus.PENDING,
    )  # fmt: skip
    queued, _ = await services.store.outbound_figures()
    assert queued == 1


async def test_send_single2_with_reply_to_answers_that_message_s_sender(
    services: Services, http: httpx.AsyncClient
) -> None:
    incoming = await services.ingestor.accept(
        RawInbound(OUTSIDE_2, ALICE, text=b"are you there?"), upstream_id=None
    )
    answer = await http.get(
        SEND_SINGLE, params={**ALICE_LOGIN, "replyTo": str(incoming.id), "text": "yes"}
    )
    assert answer.json()["recipient"] == OUTSIDE_2
    assert (await latest(services, "alice"))[0][:3] == (ALICE, OUTSIDE_2, "yes")


# Each refusal with the status code the platform gives it; the account sends nothing.
SEND_SINGLE_REFUSALS: list[tuple[dict[str, str], int]] = [
    ({"password": "alice-pw", "recipient": BOB, "text": "x"}, 1),
    ({**ALICE_LOGIN, "recipient": BOB}, 1),
    ({**ALICE_LOGIN, "text": "x"}, 1),
    ({**ALICE_LOGIN, "recipient": "not a number", "text": "x"}, 2),
    ({**ALICE_LOGIN, "recipient": BOB, "text": "x", "sender": BOB}, 2),
    ({**ALICE_LOGIN, "replyTo": "999999", "text": "x"}, 2),
    # Digits Python reads but no client writes, and an id too long for any message.
    ({**ALICE_LOGIN, "replyTo": "²", "text": "x"}, 2),
    ({**ALICE_LOGIN, "replyTo": "١٢", "text": "x"}, 2),
    ({**ALICE_LOGIN, "replyTo": "9" * 30, "text": "x"}, 2),
    ({**ALICE_LOGIN, "recipient": BOB, "text": "x" * (153 * 255 + 1)}, 2),  # 256 parts
    ({**ALICE_LOGIN, "recipient": BOB, "text": "x" * 40_001}, 2),
    ({"username": "alice", "password": "wrong", "recipient": BOB, "text": "x"}, 3),
    ({"username": "nobody", "password": "pw", "recipient": BOB, "text": "x"}, 200),
]


async def test_send_single2_refusals_carry_the_platform_s_status_codes(
    services: Services, http: httpx.AsyncClient
) -> None:
    for params, status in SEND_SINGLE_REFUSALS:
        answer = await http.get(SEND_SINGLE, params=params)
        assert answer.status_code == 200
        assert answer.json() == {"status": status}, params
    assert await latest(services, "alice") == []


# --- EAPI send_sms and get_report ------------------------------------------------------------


async def send_sms(http: httpx.AsyncClient, **params: str) -> str:
    answer = await http.post(SEND_SMS, data={**ALICE_LOGIN, **params})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    return answer.text


async def report(http: httpx.AsyncClient, batch_id: str, **params: str) -> str:
    answer = await http.get(GET_REPORT, params={**ALICE_LOGIN, "batch_id": batch_id, **params})
    assert answer.status_code == 200
    return answer.text


async def test_send_sms_sends_to_each_recipient_under_one_batch(
    services: Services, http: httpx.AsyncClient
) -> None:
    answer = await send_sms(http, message="Hi all", msisdn=f"{OUTSIDE},{BOB},+{OUTSIDE_2}")
    match = re.fullmatch(r"0\|IN_PROGRESS\|(\d+)\n", answer)
    assert match is not None
    batch_id = match.group(1)
    # Bob (on this server) has it at once; the other two wait for an SMSC.
    assert await report(http, batch_id) == (
        f"0|Results to follow\n\n{OUTSIDE}|0\n{BOB}|11\n{OUTSIDE_2}|0\n"
    )
    assert await report(http, batch_id, msisdn=BOB) == f"0|Results to follow\n\n{BOB}|11\n"
    # However the number is written; in the account's region, nationally too.
    await services.accounts.set_region("alice", "GB")
    for written in ("+44 7700 900003", "0044 7700 900003", "07700 900003"):
        assert await report(http, batch_id, msisdn=written) == (
            f"0|Results to follow\n\n{BOB}|11\n"
        ), written
    assert await report(http, batch_id, msisdn="nobody") == "0|Results to follow\n\n"
    # What an SMSC made of them, as get_report tells it.
    sent = await services.store.list_batch(1, int(batch_id))
    outside = [message.message_id for message in sent if message.recipient != BOB]
    for message_id, status in zip(
        outside, (MessageStatus.SENT, MessageStatus.UNDELIVERABLE), strict=True
    ):
        await services.store.set_outgoing_status(1, message_id, status, now=1)
    assert await report(http, batch_id) == (
        f"0|Results to follow\n\n{OUTSIDE}|10\n{BOB}|11\n{OUTSIDE_2}|51\n"
    )


async def test_get_report_adds_the_optional_fields_asked_for(
    services: Services, http: httpx.AsyncClient
) -> None:
    text = "€ and [brackets] | pipe"
    batch_id = (await send_sms(http, message=text, msisdn=BOB)).split("|")[2].strip()
    rows = await report(http, batch_id, optional_fields="body,origin_address,credits,created_time")
    status, blank, row, end = rows.split("\n")
    assert (status, blank, end) == ("0|Results to follow", "", "")
    msisdn, code, body, origin, credits, created = row.split("|")[:2] + row.split("|")[2:]
    assert (msisdn, code, origin, credits) == (BOB, "11", ALICE, "1")
    assert body == "€ and [brackets] \\x7c pipe"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", created)


async def test_send_sms_16bit_takes_hex_ucs2_and_send_time_schedules(
    services: Services, http: httpx.AsyncClient
) -> None:
    hex_text = "Привет 😀".encode("utf-16-be").hex()
    await send_sms(http, message=hex_text, msisdn=BOB, dca="16bit")
    assert (await latest(services, "bob"))[0][2] == "Привет 😀"
    account = await services.store.get_account("alice")
    assert account is not None
    later = dt.datetime.now(zoneinfo.ZoneInfo(account.time_zone)) + dt.timedelta(hours=2)
    answer = await send_sms(
        http, message="later", msisdn=OUTSIDE, send_time=later.strftime("%Y-%m-%d %H:%M:%S")
    )
    batch_id = answer.split("|")[2].strip()
    [scheduled] = await services.store.list_batch(1, int(batch_id))
    assert scheduled.status is MessageStatus.SCHEDULED
    assert await report(http, batch_id) == f"0|Results to follow\n\n{OUTSIDE}|0\n"


# Each refusal with its status line (or, where the description is the error's own words,
# its code); the account sends nothing.
SEND_SMS_REFUSALS: list[tuple[dict[str, str], str]] = [
    ({"msisdn": BOB}, "24|missing required parameter message|"),
    ({"message": "x"}, "24|missing required parameter msisdn|"),
    ({"message": "emoji 😀", "msisdn": BOB}, "24"),
    ({"message": "zz", "msisdn": BOB, "dca": "16bit"}, "24"),
    ({"message": "00ff", "msisdn": BOB, "dca": "8bit"}, "24|8bit messages cannot be sent here|"),
    ({"message": "x", "msisdn": BOB, "send_time": "tomorrow"}, "24"),
    ({"message": "x", "msisdn": BOB, "sender": BOB}, "24"),
    ({"message": "x", "msisdn": ",".join(["4477009"] * 1001)}, "201|maximum batch size exceeded|"),
    ({"message": "x", "msisdn": BOB, "password": "wrong"}, "23|invalid credentials|"),
]


async def test_send_sms_refusals_are_status_lines(
    services: Services, http: httpx.AsyncClient
) -> None:
    for params, expected in SEND_SMS_REFUSALS:
        answer = await send_sms(http, **params)
        assert answer.count("|") == 2, answer
        if "|" in expected:
            assert answer == expected, params
        else:
            assert answer.startswith(f"{expected}|"), (params, answer)
    assert await latest(services, "alice") == []


async def test_get_report_of_another_account_s_batch_has_no_rows(
    services: Services, http: httpx.AsyncClient
) -> None:
    batch_id = (await send_sms(http, message="mine", msisdn=BOB)).split("|")[2].strip()
    answer = await http.get(
        GET_REPORT, params={"username": "bob", "password": "bob-pw", "batch_id": batch_id}
    )
    assert answer.text == "0|Results to follow\n\n"
    assert await report(http, "x") == "24|batch_id must be a non-negative integer|"
    assert await report(http, batch_id, optional_fields="price") == (
        "24|unknown optional field price|"
    )
