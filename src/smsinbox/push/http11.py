"""The push worker's HTTP/1.1 client: keep-alive connections per receiver, one request at a
time on each, answers parsed by httptools (the parser uvicorn serves with).

A push needs little of a general client: a GET, or a POST of bytes already built, to a URL
taken as the operator wrote it; no redirects, cookies, proxies or decompression; from the
answer its status, its Retry-After and the first bytes of its body. aiohttp's client, which
did this before, spent half of the worker's CPU at a few thousand deliveries a second
(docs/performance.md), building each request and answer through layers of objects. Here a
request is one write of bytes and an answer a few callbacks of the parser.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import ssl
from typing import cast
from urllib.parse import unquote, urlencode, urlsplit

import httptools

from smsinbox.push.addresses import AddressPolicy

_DEFAULT_PORTS = {"http": 80, "https": 443}


class AnswerError(Exception):
    """The receiver's answer was not HTTP/1.x, or the connection ended before it did."""


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes  # at most the `keep` bytes the request asked for
    retry_after: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class _Target:
    origin: tuple[str, str, int]  # scheme, host, port: what a connection is opened to
    path: str  # the path and query exactly as written (never quoted again)
    headers: bytes  # Host, and Authorization for a URL with credentials


@functools.lru_cache(maxsize=1024)
def _target(url: str) -> _Target:
    """What a request to `url` is sent to (an endpoint's URL is the same at every push)."""
    if any(ord(character) <= 0x20 or ord(character) == 0x7F for character in url):
        raise ValueError(f"a space or control character in the URL: {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    host = parts.netloc.rpartition("@")[2]
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    headers = f"Host: {host}\r\n"
    if parts.username is not None:
        secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers += f"Authorization: Basic {base64.b64encode(secret).decode()}\r\n"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target((parts.scheme, parts.hostname, port), path, headers.encode())


def _request_line(method: str, target: _Target, params: dict[str, str]) -> bytes:
    path = target.path
    if params:
        # Escaped as aiohttp (yarl) escaped a query, leaving these characters as they are.
        path += ("&" if "?" in path else "?") + urlencode(params, safe="/?:@!$'()*,")
    return f"{method} {path} HTTP/1.1\r\n".encode()


class _Connection(asyncio.Protocol):
    """One keep-alive connection: a request written, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[Answer] | None = None
        self._keep = 0
        self._body = bytearray()
        self._retry_after: str | None = None
        self._headers_done = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport (uvloop's is not a subclass of asyncio.Transport, only alike).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            self.close()  # bytes nobody asked for: the connection cannot be trusted
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(AnswerError(f"not an HTTP/1.x answer: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is not None and not self._answer.done():
            if self._headers_done and self._parser.get_status_code():
                # An answer without a length ends where the connection does.
                self._answer.set_result(self._result())
            else:
                self._answer.set_exception(
                    AnswerError("the receiver closed the connection before its answer")
                )

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self._retry_after = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        if self._answer is None or self._answer.done():
            return
        self._body += body[: self._keep - len(self._body)]
        if len(self._body) >= self._keep:
            # All of it that matters: the rest is not waited for, and the connection,
            # with the rest still to come, cannot carry another request.
            self._answer.set_result(self._result())
            self.close()

    def on_message_complete(self) -> None:
        if self._answer is not None and not self._answer.done():
            if not self._parser.should_keep_alive():
                self.close()
            self._answer.set_result(self._result())

    # the client's side

    async def exchange(self, request: bytes, keep: int) -> Answer:
        """Send `request` and wait for the whole answer, keeping `keep` bytes of its body."""
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._keep, self._body = keep, bytearray()
        self._retry_after, self._headers_done = None, False
        self._parser = httptools.HttpResponseParser(self)
        self.transport.write(request)
        try:
            return await self._answer
        except BaseException:
            self.close()  # cancelled or failed halfway: its state is unknown
            raise
        finally:
            self._answer = None

    @property
    def answered(self) -> bool:
        """Whether any of the current answer has arrived."""
        return self._headers_done or self._parser.get_status_code() != 0

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, error: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)
        self.close()

    def _result(self) -> Answer:
        return Answer(self._parser.get_status_code(), bytes(self._body), self._retry_after)


class PushClient:
    """Keep-alive connections per receiver (scheme, host and port), reused one request at a
    time; as many are open to a receiver as requests to it run at once.

    Each connection is opened to addresses that `addresses` looked up and allowed for it
    (push/addresses.py), never to the host name, which the event loop would look up again;
    a kept connection stays on the address it was opened to. The name still goes in the
    Host header and, for https, in TLS (SNI, and the name the certificate is verified
    against).
    """

    def __init__(self, addresses: AddressPolicy, *, tls: ssl.SSLContext | None = None) -> None:
        self._addresses = addresses
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        # The system's trusted CAs unless given: made at the first https receiver.
        self._tls = tls

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str],
        headers: dict[str, str],
        body: bytes | None,
        keep: int,
    ) -> Answer:
        """One request and its answer. Raises OSError (no connection), AnswerError, or
        ValueError (a URL that is not http or https; RefusedAddress, a host whose addresses
        are not allowed)."""
        target = _target(url)
        lines = [_request_line(method, target, params), target.headers]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"a line break in header {name!r}")
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        if body is not None:
            lines.append(b"Content-Length: %d\r\n" % len(body))
        lines.append(b"\r\n")
        if body is not None:
            lines.append(body)
        request = b"".join(lines)
        connection = self._take(target.origin)
        if connection is not None:
            try:
                return self._returned(
                    target.origin, connection, await connection.exchange(request, keep)
                )
            except AnswerError:
                if connection.answered:
                    raise
                # A kept connection the receiver had closed meanwhile: once more, afresh.
        connection = await self._connect(target.origin)
        return self._returned(target.origin, connection, await connection.exchange(request, keep))

    async def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def _take(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        return None

    def _returned(
        self, origin: tuple[str, str, int], connection: _Connection, answer: Answer
    ) -> Answer:
        if not connection.closed:
            self._idle.setdefault(origin, []).append(connection)
        return answer

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        # Looked up once per connection, not per request: kept connections need none.
        addresses = await self._addresses.resolve(host)
        tls = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        loop = asyncio.get_running_loop()
        failures: list[OSError] = []
        for address in addresses:  # in turn, as the event loop tries a name's addresses
            try:
                _, connection = await loop.create_connection(
                    _Connection, address, port, ssl=tls, server_hostname=host if tls else None
                )
            except ssl.SSLError:
                raise  # the receiver's certificate or TLS, whichever address answered
            except OSError as error:
                failures.append(error)
            else:
                return connection
        if len(failures) == 1:
            raise failures[0]
        raise OSError(f"no connection to {host}: " + "; ".join(map(str, failures)))
