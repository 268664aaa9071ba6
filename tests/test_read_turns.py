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


async def test_reads_get_half_the_turns_while_messages_wait_to_be_stored() -> None:
    writing = True
    turns = ReadTurns(4, writes_waiting=lambda: writing)
    entered: list[int] = []

    async def read(n: int) -> None:
        async with turns.turn():
            entered.append(n)

    readers = [asyncio.create_task(read(n)) for n in range(8)]
    await asyncio.sleep(0)
    assert entered == [0, 1]  # two of four while ingest waits
    writing = False
    await asyncio.sleep(0)  # the two turns come back and wake as many as there is room for
    await asyncio.sleep(0)
    assert entered == [0, 1, 2, 3, 4, 5]
    await asyncio.gather(*readers)
    assert entered == list(range(8))


async def test_a_reader_that_gives_up_waiting_takes_no_turn_from_the_others() -> None:
    turns = ReadTurns(1)
    entered: list[str] = []

    async def read(name: str) -> None:
        async with turns.turn():
            entered.append(name)
            await asyncio.sleep(0.01)

    first = asyncio.create_task(read("first"))
    await asyncio.sleep(0)
    gone = asyncio.create_task(read("gone"))
    last = asyncio.create_task(read("last"))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.wait_for(asyncio.gather(first, last), 1)
    assert entered == ["first", "last"]
    with pytest.raises(asyncio.CancelledError):
        await gone
