"""The push worker's HTTP/1.1 client against raw HTTP servers on loopback: what it sends,
how it reads each kind of answer, and when it reuses a connection."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from smsinbox.push.addresses import AddressPolicy
from smsinbox.push.http11 import Answer, AnswerError, PushClient

# The servers here listen on loopback.
LOOPBACK = AddressPolicy(allow_private=True)

Answerer = Callable[[bytes, int], bytes | None]  # a request (head) and its number -> bytes


@dataclass
class RawServer:
    """Answers each request with what `answer` returns (None: close without answering)."""

    answer: Answerer
    close_after_answer: bool = False
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    url: str = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = self.answer(request, len(self.requests))
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


Start = Callable[..., Awaitable[RawServer]]


@pytest.fixture
async def raw() -> AsyncIterator[Start]:
    """Starts RawServers on loopback, and stops them after the test."""
    servers: list[asyncio.Server] = []

    async def start(answer: Answerer, *, close_after_answer: bool = False) -> RawServer:
        peer = RawServer(answer, close_after_answer)
        server = await asyncio.start_server(peer.serve, "127.0.0.1", 0)
        servers.append(server)
        peer.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return peer

    yield start
    for server in servers:
        server.close()


def ok(body: bytes = b"ok", **headers: str) -> Answerer:
    extra = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    return lambda _request, _n: (
        f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body
    )


async def post(client: PushClient, url: str, body: bytes = b"{}", keep: int = 1024) -> Answer:
    return await client.request(
        "POST", url, params={}, headers={"Content-Type": "application/json"}, body=body, keep=keep
    )


async def test_a_post_goes_out_as_written_and_the_connection_is_kept(raw: Start) -> None:
    server = await raw(ok(b"thanks", Retry_After="120"))
    client = PushClient(LOOPBACK)
    first = await post(client, server.url + "/hooks/a%2Fb?x=1", b'{"n":1}')
    second = await post(client, server.url + "/hooks/a%2Fb?x=1", b'{"n":2}')
    await client.close()
    assert first.status == 200 and first.body == b"thanks"
    assert first.retry_after == "120"
    assert second.body == b"thanks"
    assert server.connections == 1  # both on one keep-alive connection
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /hooks/a%2Fb?x=1 HTTP/1.1"  # the path never quoted again
    assert f"Host: {server.url.removeprefix('http://')}".encode() in lines
    assert b"Content-Length: 7" in lines and b"Content-Type: application/json" in lines
    assert body == b'{"n":1}'


async def test_a_get_carries_its_parameters_after_the_urls_own(raw: Start) -> None:
    server = await raw(ok())
    client = PushClient(LOOPBACK)
    params = {"text": "hi there + ä", "from": "+447700900001"}
    answer = await client.request(
        "GET", server.url + "/mo?key=k", params=params, headers={}, body=None, keep=16
    )
    await client.close()
    assert answer.status == 200
    line = server.requests[0].split(b"\r\n")[0]
    assert line == b"GET /mo?key=k&text=hi+there+%2B+%C3%A4&from=%2B447700900001 HTTP/1.1"
    assert b"content-length" not in server.requests[0].lower()


async def test_credentials_in_the_url_go_as_basic_authorization(raw: Start) -> None:
    server = await raw(ok())
    url = server.url.replace("http://", "http://user%40x:p%3Ass@")
    client = PushClient(LOOPBACK)
    await post(client, url + "/h")
    await client.close()
    token = base64.b64encode(b"user@x:p:ss").decode()
    assert f"Authorization: Basic {token}".encode() in server.requests[0].split(b"\r\n")
    assert b"user" not in server.requests[0].split(b"\r\n")[1]  # not in the Host header


async def test_chunked_and_close_delimited_answers_are_read(raw: Start) -> None:
    chunked = await raw(
        lambda _r, _n: (
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
    )
    until_close = await raw(
        lambda _r, _n: b"HTTP/1.0 200 OK\r\n\r\nall of it", close_after_answer=True
    )
    client = PushClient(LOOPBACK)
    assert (await post(client, chunked.url)).body == b"abcde"
    assert (await post(client, chunked.url)).status == 202
    assert chunked.connections == 1
    assert (await post(client, until_close.url)).body == b"all of it"
    assert (await post(client, until_close.url)).body == b"all of it"
    assert until_close.connections == 2  # HTTP/1.0 without keep-alive: not reused
    await client.close()


async def test_only_the_first_bytes_of_a_long_answer_are_kept(raw: Start) -> None:
    server = await raw(ok(b"x" * 100_000))
    client = PushClient(LOOPBACK)
    answer = await post(client, server.url, keep=10)
    assert answer.status == 200 and answer.body == b"x" * 10
    # The rest was not read: that connection cannot carry another request.
    await post(client, server.url, keep=10)
    assert server.connections == 2
    await client.close()


async def test_a_kept_connection_the_receiver_closed_is_replaced(raw: Start) -> None:
    server = await raw(ok(), close_after_answer=True)  # keep-alive promised, then closed
    client = PushClient(LOOPBACK)
    for _ in range(3):
        assert (await post(client, server.url)).status == 200
    await client.close()
    assert server.connections == 3 and len(server.requests) == 3


async def test_what_is_not_an_http_answer_fails_the_attempt(raw: Start) -> None:
    garbage = await raw(lambda _r, _n: b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    silent_close = await raw(lambda _r, _n: None)
    client = PushClient(LOOPBACK)
    with pytest.raises(AnswerError, match="not an HTTP"):
        await post(client, garbage.url)
    with pytest.raises(AnswerError, match="closed the connection"):
        await post(client, silent_close.url)
    with pytest.raises(ConnectionRefusedError):
        await post(client, "http://127.0.0.1:1/")
    with pytest.raises(ValueError, match="space or control"):
        await post(client, garbage.url + "/a b")
    await client.close()
