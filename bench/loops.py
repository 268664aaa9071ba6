"""The event loop the harnesses run on: uvloop, as the server runs, where it is installed.

Each harness shares the machine's cores with the server it measures, so the CPU its own
loop spends is taken from the server; asyncio's own loop cost the SMSC harness a third
more CPU a message than uvloop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`main` to its end on uvloop, or on asyncio's loop where uvloop is missing."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
