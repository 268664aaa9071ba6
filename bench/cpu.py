"""CPU time processes have used so far, from Linux's /proc: what the harnesses divide by
the work done to give CPU per message, per delivery or per page."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def process_seconds(pids: Iterable[int]) -> float:
    """User and system CPU seconds the processes have used so far."""
    ticks = 0
    for pid in pids:
        # The fields after the command name, which is in parentheses and may hold spaces.
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / TICKS


def postgres_seconds() -> float:
    """CPU seconds used so far by every PostgreSQL process (its backends and workers)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, _, tail = stat.read_text().rpartition(")")
        except OSError:
            continue  # gone meanwhile
        if head.endswith(("(postgres", "(postmaster")):
            fields = tail.split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / TICKS
