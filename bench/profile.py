"""Where a hot path's time goes: py-spy samples a real server while wrk saturates one route.

    python bench/profile.py ingest [--engine sqlite|postgresql] [--seconds 10]
    python bench/profile.py healthz mc5_poll eapi_poll search sync_1000 ...

Starts `smsinbox serve` over a generated 10k history exactly as bench/run.py does, runs wrk
against the route, and records the server with py-spy meanwhile. Prints the functions with
the most samples, counted as "own" (the frame itself) and "total" (the frame anywhere on the
stack), and writes a flame graph (SVG) and the collapsed stacks per route to
bench/results/profile-<route>.svg/.txt. With `--native`, C frames too and no flame graph:
read SQLite-heavy routes so (see bench/spy.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import spy  # noqa: E402
from datagen import PASSWORD, generate, username  # noqa: E402
from run import (  # noqa: E402
    Server,
    ensure_wrk,
    fresh_database,
    ingest_script,
    mysms_sessions,
    posting,
    rotating,
    run_wrk,
    sync_requests,
)

ACCOUNTS = 10


MYSMS_ROUTES = {"search", "sync_1000"}


def routes(server: Server, token: str, wanted: set[str]) -> dict[str, tuple[str, Path | None]]:
    """The routes the profile knows, as wrk runs them in bench/run.py. The mysms routes'
    logins, devices and first syncs only where one of them is wanted."""
    polled = range(1, ACCOUNTS + 1)
    mc5 = [f"/services/rest/user/messages?username={username(i)}&password={PASSWORD}&since=0"
           for i in polled]  # fmt: skip
    eapi = [f"/eapi/reception/get_inbox/1/1.1?username={username(i)}&password={PASSWORD}"
            f"&last_retrieved_id=0" for i in polled]  # fmt: skip
    known: dict[str, tuple[str, Path | None]] = {
        "healthz": (server.url + "/healthz", None),
        "ingest": (server.url, ingest_script(token, ACCOUNTS)),
        "mc5_poll": (server.url, rotating(mc5)),
        "eapi_poll": (server.url, rotating(eapi)),
    }
    if wanted & MYSMS_ROUTES:
        sessions = mysms_sessions(server, polled)
        searches = [json.dumps({**s, "query": "message 7", "limit": 100}) for s in sessions]
        syncs = [json.dumps(body) for body in sync_requests(server, sessions)]
        known["search"] = (server.url, posting("/json/user/message/search", searches))
        known["sync_1000"] = (server.url, posting("/json/user/message/sync", syncs))
    return known


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("route", nargs="+")
    parser.add_argument("--engine", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--native", action="store_true",
                        help="C frames too (see bench/spy.py); no flame graph")  # fmt: skip
    args = parser.parse_args()
    wrk = ensure_wrk()
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="smsinbox-profile-") as tmp:
        workdir = Path(tmp)
        database_url = fresh_database(args.engine, workdir)
        asyncio.run(generate(database_url, accounts=ACCOUNTS, per_account=1000,
                             progress=lambda *_: None))  # fmt: skip
        server = Server(database_url, workdir)
        token = server.cli("upstream", "add", "profile").splitlines()[-1]
        with server:
            known = routes(server, token, set(args.route))
            for route in args.route:
                url, script = known[route]
                assert server.process is not None
                recording = out / f"profile-{route}"
                recorders = spy.start(
                    server.process.pid, recording, seconds=args.seconds, native=args.native
                )
                figures = run_wrk(wrk, url, script, args.seconds, args.connections)
                spy.wait(recorders)
                print(f"{route}: {figures['rps']:,.0f} requests/s under py-spy")
                spy.summarise(recording.with_suffix(".txt"), args.top)


if __name__ == "__main__":
    main()
