"""What an MC5 poll costs the server at 10k and at 1M stored messages, without HTTP.

    python bench/pollcost.py [--rounds 3] [--seconds 5]

Generates both SQLite histories of bench/run.py (10 accounts x 1,000 messages, and 1,000
accounts x 1,000), then, in this process, polls the same 10 accounts as bench/run.py's
`mc5_poll` (a full page of 100 from `since=0`) from 32 concurrent tasks, and prints polls
per second and CPU milliseconds per poll for each size, the sizes alternating round by
round. Through HTTP on a shared machine the two sizes' rates drift apart from run to run;
here only the store and the core are measured, so whether a poll's cost grows with the
history shows without the noise of the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datagen import PASSWORD, generate, username
from smsinbox.config import Settings
from smsinbox.services import Services

SIZES = {"10k": (10, 1000), "1M": (1000, 1000)}
POLLED = 10
CLIENTS = 32


async def polls_per_second(database_url: str, seconds: float) -> tuple[float, float]:
    """(polls per second, CPU ms per poll) of CLIENTS tasks polling for `seconds`."""
    services = Services.build(Settings(database_url=database_url))
    await services.start()
    try:
        users = [username(i) for i in range(1, POLLED + 1)]
        for user in users:  # argon2 once per account, and every page marked retrieved
            await services.inbox.messages_since(user, PASSWORD, 0, outgoing=False)
        done = 0
        ends = time.perf_counter() + seconds

        async def client(first: int) -> None:
            nonlocal done
            turn = first
            while time.perf_counter() < ends:
                await services.inbox.messages_since(
                    users[turn % POLLED], PASSWORD, 0, outgoing=False
                )
                turn += 1
                done += 1

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(client(i) for i in range(CLIENTS)))
        return done / (time.perf_counter() - started), (time.process_time() - cpu) * 1000 / done
    finally:
        await services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smsinbox-pollcost-") as tmp:
        urls = {}
        for name, (accounts, per_account) in SIZES.items():
            urls[name] = f"sqlite:///{Path(tmp) / name}.db"
            print(f"generating {name} ...", flush=True)
            asyncio.run(
                generate(
                    urls[name], accounts=accounts, per_account=per_account, progress=lambda *_: None
                )
            )
        for round_ in range(1, args.rounds + 1):
            for name, url in urls.items():
                rate, cpu_ms = asyncio.run(polls_per_second(url, args.seconds))
                print(
                    f"round {round_} {name:>3}: {rate:6.0f} polls/s  {cpu_ms:.2f} ms CPU per poll"
                )


if __name__ == "__main__":
    main()
