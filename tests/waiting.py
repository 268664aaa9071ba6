"""Waiting for something another task or process does, with a deadline."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable


async def eventually(check: Callable[[], object], timeout: float = 20) -> None:
    """Return once `check()` is true. `check` may be a plain or a coroutine function; an
    AssertionError it raises means "not yet", and the last one is what fails at the
    deadline, so the test reports what was still wrong."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            outcome = check()
            if inspect.isawaitable(outcome):
                outcome = await outcome
            if outcome:
                return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s")
        await asyncio.sleep(0.05)
