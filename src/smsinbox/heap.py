"""The long-running processes' heap, once they are up."""

from __future__ import annotations

import gc

# Containers allocated, net of those freed, before the youngest generation is collected
# (CPython's default: 700). See settle_heap.
YOUNG_COLLECTION_AT = 50_000


def settle_heap() -> None:
    """Exempt what start-up built (modules, tables, compiled statements: tens of thousands
    of objects that live as long as the process) from the garbage collector's scans. A full
    collection over them took about 55 ms, a pause that every request in flight waited out.

    And collect the youngest generation after 50,000 net allocations instead of 700. A
    request's objects (a sync's thousand rows, their dicts) are freed by reference counting
    when it ends, but with 700 the collector ran in the middle of such requests, walked the
    rows they still held and moved them into older generations to be walked again: a sync's
    1,000 rows, built, classified and rendered over a frozen heap, took 657-759 µs of CPU
    with 700 and take 550-606 with 50,000 (docs/performance.md). Garbage in reference
    cycles, which only the collector frees, waits a little longer: a few MB at most."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_AT, older, oldest)
