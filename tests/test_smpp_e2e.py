"""SMPP end to end: an operator adds a bind with the CLI, `serve` binds to the SMSC (smpp34's
server on loopback, an independent SMPP implementation), the SMSC delivers, and the account
reads the messages through its API; the bind's state shows in `smsinbox smpp list`,
/readyz and /metrics, and `smsinbox smpp disable` unbinds it."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import httpx
import smpp34

from smsinbox.config import Settings
from smsinbox.core import gsm
from smsinbox.services import Services
from smsinbox.smpp import coding, udh
from tests.conftest import LiveServer, free_port
from tests.receiver import Receiver
from tests.test_cli import ok, smsinbox
from tests.waiting import eventually

ALICE = "447700900001"
SENDER = "447700900123"


async def polled_texts(http: httpx.AsyncClient) -> list[str]:
    answer = await http.get(
        "/services/rest/user/messages", params={"username": "alice", "password": "pw", "since": 0}
    )
    return [message["text"] for message in answer.json()["messages"]]


async def test_an_smsc_delivers_through_a_bind_added_with_the_cli(
    database_url: str, settings: Settings, services: Services
) -> None:
    await services.accounts.add("alice", "pw", msisdns=(ALICE,))
    port = free_port()
    smsc = smpp34.Server("127.0.0.1", port, system_id="SMSC")
    await smsc.start()
    try:
        ok(smsinbox(database_url, "smpp", "add", "carrier", "--host", "127.0.0.1", "--port",
                    str(port), "--system-id", "esme", "--password", "secret"))  # fmt: skip
        with LiveServer(settings) as server:
            esme = await asyncio.wait_for(smsc.next(), 20)
            assert isinstance(esme, smpp34.Esme) and esme.system_id == "esme"
            answer = await esme.deliver_sm(
                ALICE, gsm.encode("hello over SMPP €5"), source_addr=SENDER
            )
            assert answer.is_success
            # A long message in UCS-2, its parts the wrong way round.
            long_text = "Привет из Москвы! " * 5  # 90 UTF-16 units
            segments = coding.segment(long_text)
            assert len(segments.payloads) == 2
            for sequence in (2, 1):
                part = udh.concatenation(200, 2, sequence) + segments.payloads[sequence - 1]
                answer = await esme.deliver_sm(
                    ALICE, part, source_addr=SENDER, esm_class=udh.UDHI, data_coding=8
                )
                assert answer.is_success

            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                texts: list[str] = []

                async def poll() -> None:
                    texts[:] = await polled_texts(http)

                deadline = time.monotonic() + 15
                while len(texts) < 2 and time.monotonic() < deadline:
                    await poll()
                    await asyncio.sleep(0.2)
                assert sorted(texts) == sorted(["hello over SMPP €5", long_text])

                ready = await http.get("/readyz")
                assert ready.status_code == 200 and "smpp carrier: bound" in ready.text
                metrics = (await http.get("/metrics")).text
                assert 'smsinbox_smpp_bind_up{bind="carrier"} 1.0' in metrics
                assert (
                    'smsinbox_smpp_deliveries_total{bind="carrier",status="ESME_ROK"} 3.0'
                    in metrics
                )

            await eventually(lambda: "carrier\tbound" in ok(smsinbox(database_url, "smpp", "list")))
            ok(smsinbox(database_url, "smpp", "disable", "carrier"))
            # The server reads the change within seconds and unbinds cleanly.
            assert isinstance(await asyncio.wait_for(smsc.next(), 20), smpp34.Unbound)
            await eventually(
                lambda: "carrier\tdisabled" in ok(smsinbox(database_url, "smpp", "list"))
            )
    finally:
        await smsc.stop()


async def test_a_message_sent_through_mc5_goes_over_the_bind_and_its_statuses_are_pushed(
    database_url: str, settings: Settings, services: Services
) -> None:
    """The operator routes France to a bind with the CLI; a customer sends with MC5
    sendSingle2; the SMSC gets the submit_sm, accepts it and sends a receipt; the customer's
    endpoint gets MC5 status pushes: 16 (queued), 11 (sent), 2 (delivered)."""
    settings = dataclasses.replace(settings, push_allow_private=True)
    await services.accounts.add("alice", "pw", msisdns=(ALICE,))
    receiver = Receiver().start()
    try:
        # Through the store: the fixture's services refuse loopback addresses.
        await services.store.add_endpoint(
            "alice", url=receiver.url, format="mc5", events=("status",), secret=None, now=1
        )
        port = free_port()
        smsc = smpp34.Server("127.0.0.1", port, system_id="SMSC")
        await smsc.start()
        try:
            ok(smsinbox(database_url, "smpp", "add", "carrier", "--host", "127.0.0.1", "--port",
                        str(port), "--system-id", "esme", "--password", "secret",
                        "--route", "44"))  # fmt: skip
            assert "sends to: 33 44" in ok(smsinbox(database_url, "smpp", "routes", "carrier",
                                                    "33", "44"))  # fmt: skip
            assert "routes: 33 44" in ok(smsinbox(database_url, "smpp", "show", "carrier"))
            with LiveServer(settings) as server:
                esme = await asyncio.wait_for(smsc.next(), 20)
                assert isinstance(esme, smpp34.Esme)
                async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                    answer = await http.post(
                        "/services/rest/message/sendSingle2",
                        data={"username": "alice", "password": "pw", "recipient": "33612345678",
                              "text": "Bonjour €"},
                    )  # fmt: skip
                    sent = answer.json()
                    assert sent["messageStatus"] == "10"
                    submit = await asyncio.wait_for(smsc.next(), 20)
                    assert isinstance(submit, smpp34.SubmitSmEvent)
                    assert submit.destination_addr == "33612345678"
                    assert gsm.decode(submit.short_message) == "Bonjour €"
                    submit.accept("77")
                    await asyncio.to_thread(receiver.wait_for, 2)
                    receipt = "id:77 sub:001 dlvrd:001 stat:DELIVRD err:000 text:Bonjour"
                    answer = await esme.deliver_sm(
                        ALICE, receipt.encode(), source_addr="33612345678", esm_class=4
                    )
                    assert answer.is_success
                    pushed = await asyncio.to_thread(receiver.wait_for, 3)
                    assert [push.params["statusCode"] for push in pushed] == ["16", "11", "2"]
                    assert {push.params["id"] for push in pushed} == {sent["documentId"]}
                    assert pushed[-1].params["to"] == "33612345678"
                    metrics = (await http.get("/metrics")).text
                    assert (
                        'smsinbox_smpp_submits_total{bind="carrier",status="ESME_ROK"} 1.0'
                        in metrics
                    )
                    assert (
                        'smsinbox_smpp_receipts_total{bind="carrier",state="delivered"} 1.0'
                        in metrics
                    )
                    assert "smsinbox_outbound_queued 0.0" in metrics
        finally:
            await smsc.stop()
    finally:
        receiver.stop()
