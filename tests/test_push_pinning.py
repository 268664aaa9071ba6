"""Pushes go to the addresses that were checked: the worker's client looks a receiver's name
up once for each connection it opens, through the lookup the address check uses, and
connects to what that lookup answered and the check allowed, never to the name.

A name server that changes its answers (DNS rebinding) cannot be run on a test machine, so
the lookup is a stand-in here: the `resolver` of the address policy, which the check and
the connection share. The receivers are real, on loopback.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from smsinbox.config import Settings
from smsinbox.core.ingest import RawInbound
from smsinbox.push.addresses import AddressPolicy, RefusedAddress
from smsinbox.push.http11 import PushClient
from smsinbox.services import Services
from tests.receiver import Receiver
from tests.test_push import logged, running

# Never resolves (RFC 2606): only the stand-in answers for it.
NAME = "push.rebind.invalid"
# Passes the check. Never connected to: every test that answers it is refused first.
PUBLIC = "8.8.8.8"
NUMBER = "447700900001"


class ScriptedResolver:
    """Answers each lookup with the next of `answers`, the last one from then on, and
    remembers the names it was asked."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = collections.deque(answers)
        self.lookups: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.lookups.append(host)
        return self.answers.popleft() if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Private addresses refused, as by default; one attempt, its retry far off.
    return Settings(database_url=database_url, push_retry_schedule="0,600", push_retry_jitter=0.0)


@pytest.fixture
async def alice(services: Services) -> None:
    await services.accounts.add("alice", "pw", msisdns=(NUMBER,), time_zone="Europe/London")


async def receive_sms(services: Services, text: str) -> None:
    raw = RawInbound("447700900123", NUMBER, text=text.encode())
    await services.ingestor.accept(raw, upstream_id=None)


async def test_a_push_connects_to_the_checked_answer_and_a_later_answer_is_never_used(
    services: Services, alice: None, receiver: Receiver
) -> None:
    services.push.addresses.allow_private = True  # the receiver is on loopback
    # A second lookup of the name would answer ::1, where nothing listens.
    resolver = ScriptedResolver(["127.0.0.1"], ["::1"])
    services.push.addresses.resolver = resolver
    await services.push.add("alice", f"http://{NAME}:{receiver.port}/hook")
    async with running(services.push_worker):
        await receive_sms(services, "first")
        await asyncio.to_thread(receiver.wait_for, 1)
        await receive_sms(services, "second")
        pushes = await asyncio.to_thread(receiver.wait_for, 2)
        attempts = await logged(services, 2)
    # Both went over the one connection its only lookup opened.
    assert resolver.lookups == [NAME]
    assert [push.headers["host"] for push in pushes] == [f"{NAME}:{receiver.port}"] * 2
    assert [(a.state, a.http_status, a.error) for a in attempts] == [("delivered", 200, None)] * 2


async def test_a_name_that_rebinds_to_loopback_after_its_check_is_refused_never_reached(
    services: Services, alice: None, receiver: Receiver
) -> None:
    resolver = ScriptedResolver([PUBLIC], ["127.0.0.1"])
    services.push.addresses.resolver = resolver
    # Checked when added: the name answered a public address.
    await services.push.add("alice", f"http://{NAME}:{receiver.port}/hook")
    async with running(services.push_worker):
        await receive_sms(services, "to loopback?")
        [attempt] = await logged(services, 1)
    assert resolver.lookups == [NAME, NAME]
    assert (attempt.state, attempt.http_status, attempt.error) == (
        "pending",  # retried on the schedule, as any failed attempt
        None,
        f"{NAME} resolves to 127.0.0.1, a private address "
        "(allow with SMSINBOX_PUSH_ALLOW_PRIVATE=true)",
    )
    await asyncio.sleep(0.2)
    assert receiver.received == []


@pytest.mark.parametrize(
    "answer", [[PUBLIC, "127.0.0.1"], ["127.0.0.1", PUBLIC], [PUBLIC, "169.254.169.254"]]
)
async def test_an_answer_with_any_private_address_is_refused_whole(
    answer: list[str], receiver: Receiver
) -> None:
    addresses = AddressPolicy(allow_private=False, resolver=ScriptedResolver(answer))
    url = f"http://{NAME}:{receiver.port}/hook"
    with pytest.raises(RefusedAddress, match="a private address"):
        await addresses.check(url)
    client = PushClient(addresses)
    try:
        with pytest.raises(RefusedAddress, match="a private address"):
            await client.request("POST", url, params={}, headers={}, body=b"{}", keep=16)
    finally:
        await client.close()
    assert receiver.received == []


async def test_the_answers_are_tried_in_turn_and_an_address_in_the_url_is_not_looked_up(
    receiver: Receiver,
) -> None:
    resolver = ScriptedResolver(["::1", "127.0.0.1"])  # nothing listens on the first
    client = PushClient(AddressPolicy(allow_private=True, resolver=resolver))
    try:
        for url in [f"http://{NAME}:{receiver.port}/hook", receiver.url]:
            answer = await client.request("GET", url, params={}, headers={}, body=None, keep=16)
            assert answer.status == 200
    finally:
        await client.close()
    assert resolver.lookups == [NAME]
    assert [push.headers["host"] for push in receiver.received] == [
        f"{NAME}:{receiver.port}",
        f"127.0.0.1:{receiver.port}",
    ]


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for NAME only (no address in it), and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", f"/CN={NAME}", "-addext", f"subjectAltName=DNS:{NAME}",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def tls_receiver(
    certificate: tuple[Path, Path],
) -> AsyncIterator[tuple[int, list[str | None], list[bytes]]]:
    """An https receiver on loopback: its port, the names its clients asked for in TLS
    (SNI), and the heads of the requests it answered."""
    names: list[str | None] = []
    heads: list[bytes] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    context.sni_callback = lambda _socket, name, _context: names.append(name)  # type: ignore[assignment,func-returns-value]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    yield server.sockets[0].getsockname()[1], names, heads
    server.close()


async def test_https_verifies_the_certificate_against_the_name_not_the_address(
    certificate: tuple[Path, Path], tls_receiver: tuple[int, list[str | None], list[bytes]]
) -> None:
    port, names, heads = tls_receiver
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    resolver = ScriptedResolver(["127.0.0.1"])
    client = PushClient(AddressPolicy(allow_private=True, resolver=resolver), tls=trusting)
    try:
        answer = await client.request(
            "POST", f"https://{NAME}:{port}/hook", params={}, headers={}, body=b"{}", keep=16
        )
        assert (answer.status, answer.body) == (200, b"ok")
        # The same certificate does not name the address, so by the address it fails.
        with pytest.raises(ssl.SSLCertVerificationError):
            await client.request(
                "POST", f"https://127.0.0.1:{port}/hook", params={}, headers={}, body=b"{}", keep=16
            )
    finally:
        await client.close()
    assert names[0] == NAME
    assert f"\r\nHost: {NAME}:{port}\r\n".encode() in heads[0]
