"""Bulk reads take turns: a few per round of the event loop, each turn given back later."""

from __future__ import annotations

import asyncio

import pytest

from smsinbox.core.turns import ReadTurns


async def test_a_round_of_the_loop_starts_at_most_the_allowed_reads() -> None:
    turns = ReadTurns(2)
    entered: list[int] = []

    async def read(n: int) -> None:
        async with turns.turn():
            entered.append(n)

    readers = [asyncio.create_task(read(n)) for n in range(5)]
    await asyncio.sleep(0)  # the readers' first round has run
    assert entered == [0, 1]
    await asyncio.gather(*readers)
    assert entered == [0, 1, 2, 3, 4]


async def test_a_turn_is_held_until_the_next_round_and_given_back_after_a_failure() -> None:
    turns = ReadTurns(1)

    async def read(fails: bool) -> None:
        async with turns.turn():
            if fails:
                raise ValueError("the read failed")

    failing = asyncio.create_task(read(True))
    after = asyncio.create_task(read(False))
    await asyncio.sleep(0)  # one round: the first read ran and failed, the second waits
    assert failing.done() and not after.done()
    with pytest.raises(ValueError):
        await failing
    await asyncio.wait_for(after, 1)
