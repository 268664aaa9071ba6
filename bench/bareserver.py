"""The most a Python server on this machine can answer for ingest and the heavy polls, with
nothing of smsinbox in the way, beside smsinbox itself over the same history in the same run.

    python bench/bareserver.py [--engine sqlite|postgresql] [--seconds 8] [--rounds 2]
                               [--kannel 20000] [--accounts 10] [--routes ingest ...]

A poll's page read alone (bench/pagecost.py) leaves out what every server must also do for
it: take the HTTP request, find the account, turn the rows into the dialect's bytes and
send them. The bare server here does exactly that and nothing more, on the same stack as
smsinbox's ceiling (uvicorn with uvloop and httptools, one process, access log off): a raw
ASGI app that looks the account up by name (one statement, no password check), reads the
page with smsinbox's own statements (sqlite3 on the event loop, or four asyncpg
connections), renders it as MC5 JSON (orjson), EAPI pipe text or mysms sync JSON, and
answers. For ingest it reads the message's parameters from the query string and stores it
with smsinbox's own batch statements (`store_batch`) as smsinbox's writers do: on SQLite one
writer, a batch of whatever waits in one transaction, the search index's chunk, and a
durable COMMIT in a thread of its own that the loop waits to see begin; on PostgreSQL two
lanes by recipient, each batch committing on its own (no upstream token check, no
validation beyond the parameters). Its own no-op route is its ceiling.

Over bench/run.py's 10k history (with `--accounts 1000`, its 1M one: ingest then goes to
every account, as bench/run.py's does, and the polls read the first ten), `wrk` (32
connections) drives, in turn, the bare server's no-op, ingest (bench/run.py's own `wrk`
script), MC5 page of 100, EAPI page of 1,000 and sync of 1,000 changes, then smsinbox's
ceiling and the same four routes (`ingest`, `mc5_poll`, `eapi_poll`, `sync_1000` as
bench/run.py sends them), round after round.
Prints each as requests per second and as a fraction of its own server's ceiling, beside
the target: where the bare server stays under a target, no Python server on this machine
reaches it, and smsinbox's fraction of the bare figure is how close it is to that limit.
Then, each round, Kannel (fakesmsc, bearerbox, smsbox, as bench/run.py runs it) carries
`--kannel` messages to the trivial receiver, to the bare server's ingest and to smsinbox,
each as a fraction of Kannel's rate to the receiver (the Kannel target).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib
import zoneinfo
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import orjson

import kannel
from cpu import process_seconds
from datagen import PASSWORD, generate, number, username
from receiver import Receiver
from run import (
    KANNEL_QUERY,
    NO_TOKEN,
    NOOP_PATH,
    Server,
    ensure_wrk,
    free_port,
    fresh_database,
    ingest_script,
    mysms_sessions,
    posting,
    rotating,
    run_wrk,
    settle,
    sync_requests,
)
from smsinbox.models import Encoding, InboundMessage
from smsinbox.store import fts, inbox, sync
from smsinbox.store.driver import AsyncpgDriver, SqliteDriver, numbered
from smsinbox.store.ingest import MAX_BATCH, Arrival, store_batch
from smsinbox.store.sqlite import handed_over

ACCOUNTS = range(1, 11)
CONNECTIONS = 4
LANES = 2  # PostgreSQL's ingest lanes, as smsinbox's
REPLY_WINDOW_MS = 3_600_000
TARGETS = {"ingest": (0.15, 0.10), "mc5_poll": (0.15, 0.10), "eapi_poll": (0.03, 0.02),
           "sync_1000": (0.01, 0.008)}  # fmt: skip

_ACCOUNT = "SELECT id, time_zone FROM accounts WHERE username = ?"
_MC5 = inbox._TIME_WINDOW + inbox._ONE_DIRECTION + inbox._TIME_ORDER + " LIMIT ?"
_EAPI = inbox._ID_WINDOW + inbox._ONE_DIRECTION + " ORDER BY id LIMIT ?"
# A sync's statements as smsinbox's (its session look-up aside): the device's
# acknowledgement (a durable write), then the changes and the account's newest modseq and
# how far tombstones are purged (on SQLite two statements, on PostgreSQL one).
_OPERATION_CREATED = 1
_ORIGINS = {"sim": 0, "platform": 1, "app": 2}
_STATUSES = {"received": 0, "retrieved": 0, "pending": 1, "scheduled": 1, "complete": 2,
             "failed": 3, "sending": 4}  # fmt: skip


# --- the bare server -------------------------------------------------------------------------


class Reader:
    """Statements on the driver: sqlite3 on the loop thread, or a few asyncpg connections."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.sqlite: sqlite3.Connection | None = None
        self.idle: asyncio.Queue[Any] = asyncio.Queue()

    async def open(self) -> None:
        if self.url.startswith("sqlite:///"):
            path = self.url.removeprefix("sqlite:///")
            self.sqlite = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            return
        import asyncpg

        for _ in range(CONNECTIONS):
            self.idle.put_nowait(await asyncpg.connect(self.url))

    async def write(self, sql: str, *parameters: Any) -> None:
        """One statement committed on its own (durably, as smsinbox commits)."""
        if self.sqlite is not None:
            self.sqlite.execute("BEGIN IMMEDIATE")
            self.sqlite.execute(sql, parameters).fetchall()
            self.sqlite.execute("COMMIT")
            return
        await self.fetch(sql, *parameters)

    async def fetch(self, sql: str, *parameters: Any) -> list[Any]:
        if self.sqlite is not None:
            return self.sqlite.execute(sql, parameters).fetchall()
        connection = await self.idle.get()
        try:
            return list(await connection.fetch(numbered(sql), *parameters))
        finally:
            self.idle.put_nowait(connection)


def mc5_page(rows: list[Any]) -> bytes:
    messages = [
        {"from": sender, "recipient": recipient, "documentId": str(message_id),
         "originDocumentId": None if reply_to is None else str(reply_to),
         "timestamp": received_at // 1000, "text": text}
        for (message_id, _, sender, recipient, text, _, _, reply_to, received_at, _) in rows[:100]
    ]  # fmt: skip
    newest = messages[-1]["timestamp"] if messages else 0
    return orjson.dumps({"newestMessageTimestamp": newest, "messages": messages, "status": 0,
                         "hasMoreMessages": len(rows) > 100})  # fmt: skip


def eapi_page(rows: list[Any], zone: zoneinfo.ZoneInfo) -> bytes:
    times: dict[int, str] = {}
    lines = [f"0|records to follow|{len(rows)}", ""]
    for message_id, _, sender, recipient, text, encoding, _, reply_to, received_at, _ in rows:
        second = received_at // 1000
        local = times.get(second)
        if local is None:
            local = dt.datetime.fromtimestamp(second, zone).strftime("%Y-%m-%d %H:%M:%S")
            times[second] = local
        if "|" in text or "\n" in text or "\\" in text:
            text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "\\n")
        lines.append(f"{message_id}|{sender}|{text}|{local}|{recipient}|{reply_to or 0}"
                     f"|{encoding}")  # fmt: skip
    return ("\n".join(lines) + "\n").encode()


def sync_answer(rows: list[Any]) -> bytes:
    changes = [
        {"operation": _OPERATION_CREATED, "messageId": message_id, "address": counterpart,
         "message": text, "incoming": direction == "in", "read": bool(read),
         "locked": bool(locked), "origin": _ORIGINS.get(origin, 1),
         "status": _STATUSES.get(status, 0), "dateSent": sent_at or received_at,
         "dateStatus": status_at or received_at, "deviceMessageId": device_message_id}
        for (_, _, message_id, direction, counterpart, text, received_at, sent_at, status,
             status_at, origin, read, locked, _, _, _, device_message_id) in rows
        if message_id is not None  # the counters' row where nothing changed
    ]  # fmt: skip
    state = rows[-1][14] if rows and rows[-1][2] is not None else 0
    return orjson.dumps({"syncs": changes, "syncAcks": [], "syncState": state,
                         "syncMore": False, "syncResync": False})  # fmt: skip


class Lane:
    """Messages waiting for one writer, stored a batch of whatever waits at a time."""

    def __init__(self, write: Any) -> None:
        self.write = write
        self.waiting: list[tuple[Arrival, asyncio.Future[None]]] = []
        self.writing: asyncio.Task[None] | None = None

    async def submit(self, arrival: Arrival) -> None:
        stored = asyncio.get_running_loop().create_future()
        self.waiting.append((arrival, stored))
        if self.writing is None:
            self.writing = asyncio.create_task(self.drain())
        await stored

    async def drain(self) -> None:
        try:
            while self.waiting:
                batch = self.waiting[:MAX_BATCH]
                del self.waiting[:MAX_BATCH]
                try:
                    await self.write([arrival for arrival, _ in batch])
                except Exception as error:
                    for _, stored in batch:
                        stored.set_exception(error)
                else:
                    for _, stored in batch:
                        stored.set_result(None)
        finally:
            self.writing = None


class Writer:
    """smsinbox's batch statements on the bare driver: SQLite's one writer or PostgreSQL's
    lanes (see the module)."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.lanes: list[Lane] = []
        # Stored, and the first and last arrival (s), since /_bench/reset: for Kannel's runs.
        self.stored = 0
        self.first: float | None = None
        self.last: float | None = None

    async def open(self) -> None:
        if self.url.startswith("sqlite:///"):
            path = self.url.removeprefix("sqlite:///")
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA synchronous=FULL")  # durable at each commit
            connection.execute("PRAGMA foreign_keys=ON")

            committer = ThreadPoolExecutor(1)

            async def write_sqlite(arrivals: list[Arrival]) -> None:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    await store_batch(SqliteDriver(connection), arrivals)
                    fts.index_chunk(connection, at_least=fts.CHUNK)
                    # As smsinbox commits: in a thread of its own, which the loop waits to
                    # see begin (else it waits for the interpreter lock).
                    await handed_over(committer, lambda: connection.execute("COMMIT"))
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise

            self.lanes = [Lane(write_sqlite)]
            return
        import asyncpg

        for _ in range(LANES):
            # As smsinbox's batch writes: planned once, each batch committing on its own.
            driver = AsyncpgDriver(await asyncpg.connect(
                self.url, server_settings={"plan_cache_mode": "force_generic_plan"}))  # fmt: skip

            async def write_postgres(arrivals: list[Arrival], driver: Any = driver) -> None:
                await store_batch(driver, arrivals)

            self.lanes.append(Lane(write_postgres))

    async def store(self, query: dict[str, list[str]]) -> None:
        recipient = query["to"][0]
        inbound = InboundMessage(query["from"][0], recipient, query["text"][0], Encoding.GSM7,
                                 upstream_id=None, upstream_message_id=query["id"][0])  # fmt: skip
        now = time.time()
        arrival = Arrival(inbound, int(now * 1000), REPLY_WINDOW_MS)
        await self.lanes[zlib.crc32(recipient.encode()) % len(self.lanes)].submit(arrival)
        self.stored += 1
        self.first = now if self.first is None else min(self.first, now)
        self.last = now if self.last is None else max(self.last, now)


class BareApp:
    def __init__(self, database_url: str) -> None:
        self.reader = Reader(database_url)
        self.writer = Writer(database_url)
        self.zones: dict[str, zoneinfo.ZoneInfo] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await self.reader.open()
            await self.writer.open()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        body = b""
        if path == "/inbound/sms":
            await self.writer.store(parse_qs(scope["query_string"].decode()))
        elif path == "/_bench/reset":
            self.writer.stored, self.writer.first, self.writer.last = 0, None, None
        elif path == "/_bench/stats":
            writer = self.writer
            body = orjson.dumps({"count": writer.stored, "first": writer.first,
                                 "last": writer.last})  # fmt: skip
        elif path in ("/mc5", "/eapi", "/sync"):  # anything else: the no-op
            name = parse_qs(scope["query_string"].decode())["u"][0]
            found = await self.reader.fetch(_ACCOUNT, name)
            account_id, zone = found[0]
            before = int(time.time()) * 1000
            if path == "/mc5":
                body = mc5_page(await self.reader.fetch(_MC5, account_id, 1000, before, "in", 101))
            elif path == "/eapi":
                rows = await self.reader.fetch(_EAPI, account_id, 0, "in", 1000)
                body = eapi_page(rows, self.zones.setdefault(zone, zoneinfo.ZoneInfo(zone)))
            else:
                device = int(parse_qs(scope["query_string"].decode())["d"][0])
                now = int(time.time() * 1000)
                await self.reader.write(sync._ACKNOWLEDGE, now, 0, 0, account_id, device,
                                        account_id)  # fmt: skip
                if self.reader.sqlite is not None:
                    await self.reader.fetch(sync._COUNTERS, account_id)
                    rows = await self.reader.fetch(sync.CHANGES_PADDED.kept, account_id, 0, 1000)
                else:
                    rows = await self.reader.fetch(sync.CHANGES_JOINED.kept, account_id, 0, 1000,
                                                   account_id)  # fmt: skip
                body = sync_answer(rows)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})


def serve(database_url: str, port: int) -> None:
    import uvicorn

    uvicorn.run(BareApp(database_url), host="127.0.0.1", port=port, loop="uvloop",
                http="httptools", access_log=False, log_level="warning")  # fmt: skip


# --- the comparison --------------------------------------------------------------------------


class BareServer:
    def __init__(self, database_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, __file__, "--serve", database_url, "--port", str(self.port)]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BareServer:
        self.process = subprocess.Popen(self.command)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/noop", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("bare server did not start")

    def __exit__(self, *exc_info: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(30)


ROUTES = ("ingest", "mc5_poll", "eapi_poll", "sync_1000")


def compare(
    engine: str,
    seconds: int,
    rounds: int,
    kannel_messages: int,
    accounts: int,
    compared: tuple[str, ...] = ROUTES,
) -> None:
    wrk = ensure_wrk()
    binaries = kannel.ensure_kannel() if kannel_messages else None
    with tempfile.TemporaryDirectory(prefix="smsinbox-bare-") as tmp:
        workdir = Path(tmp)
        url = fresh_database(engine, workdir)
        asyncio.run(generate(url, accounts=accounts, per_account=1000, progress=lambda *_: None))
        names = [username(i) for i in ACCOUNTS]
        smsinbox = Server(url, workdir)
        token = smsinbox.cli("upstream", "add", "bare").splitlines()[-1]
        with smsinbox, BareServer(url) as bare:
            mc5 = [f"/services/rest/user/messages?username={n}&password={PASSWORD}&since=0"
                   for n in names]  # fmt: skip
            eapi = [f"/eapi/reception/get_inbox/1/1.1?username={n}&password={PASSWORD}"
                    "&last_retrieved_id=0" for n in names]  # fmt: skip
            for path in mc5 + eapi:  # passwords verified once, pages marked retrieved
                httpx.get(smsinbox.url + path, timeout=60)
            synced = sync_requests(smsinbox, mysms_sessions(smsinbox, ACCOUNTS))
            bodies = [json.dumps(body) for body in synced]
            devices = [body["deviceId"] for body in synced]
            assert bare.process is not None
            pids = {"bare": bare.process.pid, "smsinbox": smsinbox.pid}
            sides = {
                "bare": (bare.url, {
                    "ceiling": (bare.url + "/noop", None),
                    "ingest": (bare.url, None),  # a script of its own each run (below)
                    "mc5_poll": (bare.url, rotating([f"/mc5?u={n}" for n in names])),
                    "eapi_poll": (bare.url, rotating([f"/eapi?u={n}" for n in names])),
                    "sync_1000": (bare.url, rotating([f"/sync?u={n}&d={d}" for n, d
                                                      in zip(names, devices, strict=True)])),
                }),
                "smsinbox": (smsinbox.url, {
                    "ceiling": (smsinbox.url + NOOP_PATH, None),
                    "ingest": (smsinbox.url, None),
                    "mc5_poll": (smsinbox.url, rotating(mc5)),
                    "eapi_poll": (smsinbox.url, rotating(eapi)),
                    "sync_1000": (smsinbox.url, posting("/json/user/message/sync", bodies)),
                }),
            }  # fmt: skip
            figures: dict[tuple[str, str], list[float]] = {}
            for _ in range(rounds):
                for side, (base, routes) in sides.items():
                    for route, (target_url, script) in routes.items():
                        if route != "ceiling" and route not in compared:
                            continue
                        if route == "ingest":  # new ids each run: never a run of duplicates
                            script = ingest_script(token, accounts)
                        settle(base)
                        cpu = process_seconds([pids[side]])
                        rate = run_wrk(wrk, target_url, script, seconds, 32)["rps"]
                        cpu = process_seconds([pids[side]]) - cpu
                        figures.setdefault((side, route), []).append(rate)
                        # The server's own CPU a request (a database server's not counted).
                        figures.setdefault((side, route + " cpu"), []).append(
                            cpu * 1e6 / max(rate * seconds, 1)
                        )
                if binaries is not None:
                    for side, rate in through_kannel(binaries, workdir, kannel_messages,
                                                     smsinbox, bare).items():  # fmt: skip
                        figures.setdefault((side, "kannel"), []).append(rate)
    print(f"{engine}, {accounts * 1000:,} stored, {rounds} rounds of {seconds} s, 32 connections")
    for route in compared:
        target = TARGETS[route][engine == "postgresql"]
        ratios = {}
        for side in ("bare", "smsinbox"):
            rates = figures[(side, route)]
            ceilings = figures[(side, "ceiling")]
            ratios[side] = [r / c for r, c in zip(rates, ceilings, strict=True)]
            cpu = figures[(side, route + " cpu")]
            print(f"  {route:10} {side:9} {min(rates):8,.0f}-{max(rates):,.0f}/s"
                  f"  x ceiling {min(ratios[side]):.4f}-{max(ratios[side]):.4f}"
                  f"  (ceiling {min(ceilings):,.0f}-{max(ceilings):,.0f};"
                  f" target {target}); server CPU a request {min(cpu):,.0f}-{max(cpu):,.0f}"
                  " us")  # fmt: skip
        share = [s / b for s, b in zip(figures[("smsinbox", route)], figures[("bare", route)],
                                       strict=True)]  # fmt: skip
        print(f"  {route:10} smsinbox at {min(share):.2f}-{max(share):.2f} of the bare server")
    if binaries is not None:
        target = 0.7 if engine == "postgresql" else 0.9
        carried = figures[("receiver", "kannel")]
        print(f"  kannel     receiver {min(carried):8,.0f}-{max(carried):,.0f} messages/s"
              f" ({kannel_messages:,} messages, max-pending 32)")  # fmt: skip
        for side in ("bare", "smsinbox"):
            rates = figures[(side, "kannel")]
            ratios = [r / c for r, c in zip(rates, carried, strict=True)]
            print(f"  kannel     {side:9}{min(rates):8,.0f}-{max(rates):,.0f} messages/s"
                  f"  x Kannel to the receiver {min(ratios):.2f}-{max(ratios):.2f}"
                  f" (target {target})")  # fmt: skip


def through_kannel(
    binaries: tuple[str, str, str],
    workdir: Path,
    messages: int,
    smsinbox: Server,
    bare: BareServer,
) -> dict[str, float]:
    """Kannel carrying `messages` to the trivial receiver, the bare server and smsinbox, as
    bench/run.py's Kannel rows do: messages per second at each far end."""
    common = {"recipients": [number(i) for i in ACCOUNTS], "messages": messages,
              "max_pending": 32, "free_port": free_port, "limit_s": 1200}  # fmt: skip
    rates = {}
    with Receiver(free_port(), workdir / "receiver.log") as trivial:

        def receiver_span() -> tuple[float, float]:
            stats = trivial.control("stats")
            return stats["first"], stats["last"]

        rates["receiver"] = kannel.carry(
            binaries, workdir, get_url=trivial.url + KANNEL_QUERY.format(token=NO_TOKEN),
            arrived=lambda: trivial.control("stats")["count"], span=receiver_span,
            far_end_pid=trivial.pid, **common,
        )["rps"]  # fmt: skip

    def bare_stats() -> Any:
        return httpx.get(bare.url + "/_bench/stats", timeout=30).json()

    def bare_span() -> tuple[float, float]:
        stats = bare_stats()
        return stats["first"], stats["last"]

    settle(bare.url)
    httpx.get(bare.url + "/_bench/reset", timeout=30)
    assert bare.process is not None
    rates["bare"] = kannel.carry(
        binaries, workdir, get_url=bare.url + KANNEL_QUERY.format(token=NO_TOKEN),
        arrived=lambda: bare_stats()["count"], span=bare_span, far_end_pid=bare.process.pid,
        **common,
    )["rps"]  # fmt: skip
    upstream = f"kannel-{time.time_ns()}"
    token = smsinbox.cli("upstream", "add", upstream).splitlines()[-1]

    def smsinbox_span() -> tuple[float, float]:
        _, first, last = kannel.stored_span(smsinbox.database_url, upstream)
        return first, last

    settle(smsinbox.url)
    rates["smsinbox"] = kannel.carry(
        binaries, workdir, get_url=smsinbox.url + KANNEL_QUERY.format(token=token),
        arrived=smsinbox.stored, span=smsinbox_span, far_end_pid=smsinbox.pid, **common,
    )["rps"]  # fmt: skip
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--accounts", type=int, default=10,
                        help="1000 for the 1M history (ingest goes to all of them)")  # fmt: skip
    parser.add_argument("--kannel", type=int, default=20_000, metavar="MESSAGES",
                        help="carried through Kannel to each far end a round; 0: none")  # fmt: skip
    parser.add_argument("--routes", nargs="+", choices=ROUTES, default=ROUTES,
                        help="the routes compared (default: all)")  # fmt: skip
    parser.add_argument("--serve", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    compare(args.engine, args.seconds, args.rounds, args.kannel, args.accounts, tuple(args.routes))


if __name__ == "__main__":
    main()
