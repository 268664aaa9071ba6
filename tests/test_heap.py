"""The long-running processes' garbage collector, once they are up (smsinbox/heap.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from smsinbox.heap import YOUNG_COLLECTION_AT, settle_heap


@pytest.fixture
def collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_start_up_objects_are_frozen_and_young_ones_collected_later(collector: None) -> None:
    _, older, oldest = gc.get_threshold()
    settle_heap()
    assert gc.get_freeze_count() > 0
    # Only the youngest generation's threshold changes; the older ones keep theirs.
    assert gc.get_threshold() == (YOUNG_COLLECTION_AT, older, oldest)


def test_garbage_in_cycles_is_still_collected_without_being_asked(collector: None) -> None:
    settle_heap()

    class Node:
        partner: Node

    collected: list[str] = []
    first, second = Node(), Node()
    first.partner, second.partner = second, first
    weakref.finalize(first, collected.append, "first")
    del first, second
    assert collected == []  # a cycle: reference counting alone never frees it
    # As a server's requests allocate: the young generation fills and is collected.
    held = [[] for _ in range(YOUNG_COLLECTION_AT + 1_000)]
    assert collected == ["first"]
    del held
