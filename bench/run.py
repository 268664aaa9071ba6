"""smsinbox benchmarks: each hot path beside the ceiling of the same server, same run.

    python bench/run.py [--mode quick|full] [--engines sqlite,postgresql]

For each engine and stored-history size it generates data, starts `smsinbox serve` as a
real process (uvicorn with uvloop and httptools, production settings), and drives it with
wrk from a separate process. Prints one table and writes bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from datagen import PASSWORD, generate, number, username  # noqa: E402

SMSINBOX = [sys.executable, "-m", "smsinbox"]
PG_URL = os.environ.get(
    "SMSINBOX_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/smsinbox_bench"
)

# Stored history: (accounts, messages per account). Pages stay full at every size (1000
# messages per polled account), so a slower page can only come from a larger history.
MODES: dict[str, dict[str, Any]] = {
    "quick": {"sizes": [(10, 1000)], "duration": 5, "connections": 16},
    "full": {"sizes": [(10, 1000), (1000, 1000)], "duration": 15, "connections": 32},
}
POLLED_ACCOUNTS = 10


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: installing Debian's package", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    return shutil.which("wrk") or sys.exit("wrk is not available")


def progress(done: int, total: int) -> None:
    width = 40
    filled = width * done // total
    print(f"\r  data [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,}", end="")
    if done == total:
        print()


def fresh_database(engine: str, workdir: Path) -> str:
    if engine == "sqlite":
        return f"sqlite:///{workdir / 'bench.db'}"
    admin = PG_URL.rsplit("/", 1)[0] + "/postgres"
    name = PG_URL.rsplit("/", 1)[1]
    for statement in (f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}"):
        subprocess.run(["psql", admin, "-q", "-c", statement], check=True)
    return PG_URL


class Server:
    """`smsinbox serve` as a separate process."""

    def __init__(self, database_url: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "SMSINBOX_DATABASE_URL": database_url,
            "SMSINBOX_BENCHMARK_ROUTES": "true",
            # The load is the point here; the limiter itself still runs on every request.
            "SMSINBOX_RATE_LIMIT_PER_ACCOUNT": "1000000/second",
            "SMSINBOX_RATE_LIMIT_PER_API_KEY": "1000000/second",
        }
        self.log = (workdir / "server.log").open("ab")
        self.process: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [*SMSINBOX, *args], env=self.env, capture_output=True, text=True, check=True
        )
        return result.stdout

    def __enter__(self) -> Server:
        self.process = subprocess.Popen(
            [*SMSINBOX, "serve", "--port", str(self.port)],
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("server did not start; see server.log")

    def rss_mb(self) -> float:
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kilobytes = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        return kilobytes / 1024

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)
        self.log.close()


def wrk_script(lines: str) -> Path:
    handle = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    handle.write(lines)
    handle.close()
    return Path(handle.name)


def rotating(paths: list[str]) -> Path:
    """A wrk script that cycles through `paths`, one per request."""
    quoted = ",".join(json.dumps(p) for p in paths)
    return wrk_script(
        f"local paths = {{{quoted}}}\nlocal i = 0\n"
        "request = function()\n  i = i % #paths + 1\n"
        "  return wrk.format('GET', paths[i])\nend\n"
    )


def posting(path: str, bodies: list[str]) -> Path:
    """A wrk script that POSTs JSON `bodies` to `path` in turn."""
    quoted = ",".join(json.dumps(b) for b in bodies)
    return wrk_script(
        f"local bodies = {{{quoted}}}\nlocal i = 0\n"
        "local headers = {['Content-Type'] = 'application/json'}\n"
        "request = function()\n  i = i % #bodies + 1\n"
        f"  return wrk.format('POST', '{path}', headers, bodies[i])\nend\n"
    )


def mysms_sessions(server: Server, accounts: range) -> list[dict[str, str]]:
    """An API key and a logged-in auth token per account."""
    key = server.cli("apikey", "create", "bench").splitlines()[-1]
    sessions = []
    for i in accounts:
        answer = httpx.post(
            server.url + "/json/user/login",
            json={"apiKey": key, "msisdn": int(number(i)), "password": PASSWORD},
            timeout=30,
        ).json()
        sessions.append({"apiKey": key, "authToken": answer["authToken"]})
    return sessions


def ingest_script(token: str, accounts: int) -> Path:
    """Each request a new message (unique id per wrk thread) to one of the accounts."""
    return wrk_script(
        f"local token = '{token}'\nlocal accounts = {accounts}\nlocal n = 0\n"
        "local tag = tostring(math.random(1, 1e9))\n"
        "request = function()\n  n = n + 1\n"
        f"  local to = {number(0)} + (n % accounts) + 1\n"
        "  return wrk.format('GET', '/inbound/sms?token=' .. token .. '&from=447900000001"
        "&to=' .. to .. '&text=bench+message&id=' .. tag .. '-' .. n)\nend\n"
    )


def run_wrk(
    wrk: str, url: str, script: Path | None, duration: int, connections: int
) -> dict[str, float]:
    command = [wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    latency = {p: _ms(v) for p, v in re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", output, re.M)}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    return {
        "rps": rate,
        "p50_ms": latency.get("50", float("nan")),
        "p99_ms": latency.get("99", float("nan")),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }  # type: ignore[dict-item]


def settle(url: str, *, quiet_answers: int = 5, limit_s: float = 30.0) -> None:
    """Wait until the server has worked off the previous run.

    wrk stops by closing its connections, but requests it had sent (and ones it gave up on
    after its timeout) are still being answered. A run started at once would measure that
    backlog, not its own route: a few seconds of queued searches in a one-client run's p99.
    """
    deadline = time.monotonic() + limit_s
    quiet = 0
    with httpx.Client(base_url=url, timeout=limit_s) as client:
        client.get("/healthz")  # the keep-alive connection, outside the timings
        while quiet < quiet_answers and time.monotonic() < deadline:
            started = time.perf_counter()
            client.get("/healthz")
            quiet = quiet + 1 if time.perf_counter() - started < 0.01 else 0
            time.sleep(0.05)


def _ms(value: str) -> float:
    number_part, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number_part) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def bench_engine(engine: str, mode: dict[str, Any], wrk: str) -> list[dict[str, Any]]:
    results = []
    for accounts, per_account in mode["sizes"]:
        stored = accounts * per_account
        print(f"{engine}: {stored:,} messages over {accounts:,} accounts")
        with tempfile.TemporaryDirectory(prefix="smsinbox-bench-") as tmp:
            workdir = Path(tmp)
            database_url = fresh_database(engine, workdir)
            asyncio.run(generate(database_url, accounts=accounts, per_account=per_account,
                                 progress=progress))  # fmt: skip
            server = Server(database_url, workdir)
            token = server.cli("upstream", "add", "bench").splitlines()[-1]
            with server:
                polled = range(1, min(POLLED_ACCOUNTS, accounts) + 1)
                mc5 = [
                    f"/services/rest/user/messages?username={username(i)}"
                    f"&password={PASSWORD}&since=0" for i in polled
                ]  # fmt: skip
                eapi = [
                    f"/eapi/reception/get_inbox/1/1.1?username={username(i)}"
                    f"&password={PASSWORD}&last_retrieved_id=0" for i in polled
                ]  # fmt: skip
                for path in mc5 + eapi:  # argon2 once per account, before measuring
                    httpx.get(server.url + path, timeout=30).raise_for_status()
                sessions = mysms_sessions(server, polled)
                # A word in one message in a thousand of each account ("message 7"
                # matches 7, 70-79, 700-799: about 111 per account, a full page of 100).
                searches = [json.dumps({**s, "query": "message 7", "limit": 100})
                            for s in sessions]  # fmt: skip
                listings = [json.dumps({**s, "limit": 100}) for s in sessions]
                rss_rest = server.rss_mb()
                runs = {
                    "ceiling": (server.url + "/_bench/noop", None),
                    "mc5_poll": (server.url, rotating(mc5)),
                    "eapi_poll": (server.url, rotating(eapi)),
                    "search": (server.url, posting("/json/user/message/search", searches)),
                    # One client at a time: the latency a user waits for, without queueing.
                    "search_1c": (server.url, posting("/json/user/message/search", searches)),
                    "conversations": (
                        server.url,
                        posting("/json/user/message/conversations/get", listings),
                    ),
                    "ingest": (server.url, ingest_script(token, accounts)),
                }
                measured = {}
                for name, (url, script) in runs.items():
                    connections = 1 if name.endswith("_1c") else mode["connections"]
                    settle(server.url)
                    measured[name] = run_wrk(wrk, url, script, mode["duration"], connections)
                    print(f"  {name:10} {measured[name]['rps']:>9,.0f} req/s  "
                          f"p99 {measured[name]['p99_ms']:.2f} ms")  # fmt: skip
                rss_load = server.rss_mb()
            ceiling = measured["ceiling"]["rps"]
            for name, figures in measured.items():
                results.append({
                    "engine": engine, "stored": stored, "accounts": accounts, "route": name,
                    **figures, "ratio": figures["rps"] / ceiling,
                    "rss_rest_mb": rss_rest, "rss_load_mb": rss_load,
                })  # fmt: skip
    return results


def postgres_available() -> bool:
    admin = PG_URL.rsplit("/", 1)[0] + "/postgres"
    check = subprocess.run(["psql", admin, "-q", "-c", "SELECT 1"], capture_output=True)
    return check.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="full")
    parser.add_argument("--engines", default="sqlite,postgresql")
    args = parser.parse_args()
    mode = MODES[args.mode]
    wrk = ensure_wrk()
    results: list[dict[str, Any]] = []
    for engine in args.engines.split(","):
        if engine == "postgresql" and not postgres_available():
            print(f"postgresql: skipped, cannot reach {PG_URL}")
            continue
        results += bench_engine(engine, mode, wrk)
    print()
    print(f"{'engine':11}{'stored':>10}  {'route':11}{'req/s':>9}{'x ceiling':>11}"
          f"{'p50 ms':>9}{'p99 ms':>9}{'RSS MB':>9}")  # fmt: skip
    for row in results:
        print(f"{row['engine']:11}{row['stored']:>10,}  {row['route']:11}{row['rps']:>9,.0f}"
              f"{row['ratio']:>11.3f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
              f"{row['rss_load_mb']:>9.0f}")  # fmt: skip
    out = HERE / "results" / "latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "mode": args.mode,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "duration_s": mode["duration"], "connections": mode["connections"],
        "results": results,
    }, indent=2))  # fmt: skip
    print(f"\nwritten to {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
