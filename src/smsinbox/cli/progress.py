"""Progress of long CLI work: a live bar on a terminal, plain lines otherwise.

A bar redrawn on a pipe or in a log file is noise, and silence for minutes looks like a hang:
on a terminal `rich` draws one, elsewhere a line goes to stderr every `LINE_EVERY_S` seconds
and at the end, so a cron job's mail or a CI log still shows the work moving. Progress never
goes to stdout, which carries the command's answer (and `--json`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

LINE_EVERY_S = 5.0


class Progress:
    """Counts units of one piece of work; `advance` is cheap enough to call per row."""

    def __init__(self, description: str, total: int | None, stream: TextIO) -> None:
        self.description = description
        self.total = total
        self.done = 0
        self._stream = stream
        self._bar: object | None = None
        self._task: object | None = None
        self._next_line = time.monotonic() + LINE_EVERY_S

    def advance(self, units: int = 1) -> None:
        self.done += units
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)  # type: ignore[attr-defined]
        elif time.monotonic() >= self._next_line:
            self._next_line = time.monotonic() + LINE_EVERY_S
            self._line()

    def set_total(self, total: int) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)  # type: ignore[attr-defined]

    def _line(self) -> None:
        of = f" of {self.total}" if self.total is not None else ""
        self._stream.write(f"{self.description}: {self.done}{of}\n")
        self._stream.flush()


@contextmanager
def progress(
    description: str, total: int | None = None, *, stream: TextIO | None = None
) -> Iterator[Progress]:
    """Report the progress of the work inside the block (see the module)."""
    out = stream if stream is not None else sys.stderr
    tracker = Progress(description, total, out)
    if not out.isatty():
        yield tracker
        tracker._line()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    bar = Bar(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=out),
        transient=False,
    )
    with bar:
        tracker._bar = bar
        tracker._task = bar.add_task(description, total=total)
        yield tracker
