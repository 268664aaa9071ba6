"""Where a hot path's time goes: py-spy samples a real server while wrk saturates one route.

    python bench/profile.py ingest [--engine sqlite|postgresql] [--seconds 10]
    python bench/profile.py healthz mc5_poll eapi_poll ...

Starts `smsinbox serve` over a generated 10k history exactly as bench/run.py does, runs wrk
against the route, and records the server with py-spy meanwhile (`--native` off; the
interesting frames are Python's). Prints the functions with the most samples, counted as
"own" (the frame itself) and "total" (the frame anywhere on the stack), and writes a flame
graph (SVG) and the collapsed stacks per route to bench/results/profile-<route>.svg/.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from datagen import PASSWORD, generate, username  # noqa: E402
from run import Server, ensure_wrk, fresh_database, ingest_script, rotating, run_wrk  # noqa: E402

ACCOUNTS = 10


def routes(server: Server, token: str) -> dict[str, tuple[str, Path | None]]:
    """The routes the profile knows, as wrk runs them in bench/run.py."""
    polled = range(1, ACCOUNTS + 1)
    mc5 = [f"/services/rest/user/messages?username={username(i)}&password={PASSWORD}&since=0"
           for i in polled]  # fmt: skip
    eapi = [f"/eapi/reception/get_inbox/1/1.1?username={username(i)}&password={PASSWORD}"
            f"&last_retrieved_id=0" for i in polled]  # fmt: skip
    return {
        "healthz": (server.url + "/healthz", None),
        "ingest": (server.url, ingest_script(token, ACCOUNTS)),
        "mc5_poll": (server.url, rotating(mc5)),
        "eapi_poll": (server.url, rotating(eapi)),
    }


def record(pid: int, seconds: int, raw: Path, svg: Path) -> None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    # Non-blocking: two samplers that each paused the server to read it got in each other's
    # way, and one of them sometimes wrote nothing.
    common = [py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200",
              "--nonblocking"]  # fmt: skip
    threads = [
        threading.Thread(target=subprocess.run, args=([*common, "-f", "raw", "-o", str(raw)],),
                         kwargs={"capture_output": True}),
        threading.Thread(target=subprocess.run, args=([*common, "-f", "flamegraph", "-o",
                         str(svg)],), kwargs={"capture_output": True}),
    ]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def summarise(raw: Path, top: int) -> None:
    """The frames with most samples in py-spy's collapsed-stack output."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    print(f"  {samples} samples")
    print("  own:")
    for frame, count in own.most_common(top):
        print(f"    {100 * count / samples:5.1f}%  {frame}")
    print("  total:")
    for frame, count in total.most_common(top * 2):
        print(f"    {100 * count / samples:5.1f}%  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("route", nargs="+")
    parser.add_argument("--engine", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--top", type=int, default=25)
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
            known = routes(server, token)
            for route in args.route:
                url, script = known[route]
                assert server.process is not None
                raw, svg = out / f"profile-{route}.txt", out / f"profile-{route}.svg"
                sampler = threading.Thread(
                    target=record, args=(server.process.pid, args.seconds, raw, svg)
                )
                sampler.start()
                figures = run_wrk(wrk, url, script, args.seconds, args.connections)
                sampler.join()
                print(f"{route}: {figures['rps']:,.0f} requests/s under py-spy; {svg}")
                summarise(raw, args.top)


if __name__ == "__main__":
    main()
