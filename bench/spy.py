"""py-spy recordings of the server, and what they say: the harnesses' one way to profile.

A recording writes a flame graph (`<path>.svg`) and the collapsed stacks (`<path>.txt`),
sampling without pausing the server (`--nonblocking`): two samplers that each paused it to
read it got in each other's way, and one of them sometimes wrote nothing.
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from pathlib import Path


def start(
    pid: int, path: Path, *, seconds: int | None = None, native: bool = False
) -> list[subprocess.Popen[bytes]]:
    """py-spy recording `pid` for `seconds`, or until `stop` if None.

    `native` adds the C frames, one recorder (collapsed stacks only) that pauses the
    server for each sample: it must, to unwind C stacks. Without them, time spent in C code
    that releases the GIL (SQLite's statements) is charged to whatever Python frame is
    current, and a SQLite-heavy profile overstates its statements.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    common = [py_spy, "record", "--pid", str(pid), "--rate", "200"]
    common += ["--native"] if native else ["--nonblocking"]
    if seconds is not None:
        common += ["--duration", str(seconds)]
    forms = (("raw", ".txt"),) if native else (("flamegraph", ".svg"), ("raw", ".txt"))
    return [
        subprocess.Popen([*common, "-f", form, "-o", str(path.with_suffix(suffix))],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for form, suffix in forms
    ]  # fmt: skip


def stop(recorders: list[subprocess.Popen[bytes]]) -> None:
    """End recordings started without a duration; they write their files as they end."""
    for recorder in recorders:
        recorder.send_signal(signal.SIGINT)
    wait(recorders)


def wait(recorders: list[subprocess.Popen[bytes]]) -> None:
    for recorder in recorders:
        recorder.wait(60)


def summarise(raw: Path, top: int = 15) -> None:
    """The frames with most samples in py-spy's collapsed stacks: own, then anywhere on the
    stack."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = stack.split(";")
        count = int(count_text)
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    print(f"  {raw}: {samples} samples; own:")
    for frame, count in own.most_common(top):
        print(f"    {100 * count / samples:5.1f}%  {frame}")
    print("  total:")
    for frame, count in total.most_common(top * 2):
        print(f"    {100 * count / samples:5.1f}%  {frame}")
