"""Search sees every message committed before it, while SQLite indexes in chunks."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Connection, delete, text

from smsinbox.core.ingest import RawInbound
from smsinbox.services import Services
from smsinbox.store import fts
from smsinbox.store import tables as t
from smsinbox.store.migrate import alembic_config, head_revision

ALICE_NUMBER = "447700900001"
# The messages SQLite's index holds, by id (its entries are keyed by account and sequence).
INDEXED = (
    "SELECT m.id FROM messages_search s JOIN messages m"
    f" ON m.account_id = s.rowid >> {fts.ACCOUNT_SHIFT}"
    f" AND m.seq = s.rowid & {(1 << fts.ACCOUNT_SHIFT) - 1} ORDER BY m.id"
)
# The same for revisions before 0009, keyed by id.
INDEXED_BY_ID = "SELECT rowid FROM messages_search ORDER BY rowid"


def needle(n: int) -> RawInbound:
    return RawInbound(sender="447700900123", recipient=ALICE_NUMBER, text=f"needle {n}".encode())


@pytest.fixture
async def alice(services: Services) -> int:
    account = await services.accounts.add("alice", "pw", msisdns=(ALICE_NUMBER,))
    return account.id


async def found(services: Services, account_id: int, query: str = "needle") -> set[int]:
    hits = await services.store.search_messages(
        account_id, query, counterpart=None, locked=None, limit=100_000
    )
    return {message.id for message in hits}


async def test_a_search_sees_every_message_stored_before_it_began(
    services: Services, alice: int
) -> None:
    stored: list[int] = []
    writing = True

    async def writer(first: int) -> None:
        for n in range(first, first + 265):
            stored.append((await services.ingestor.accept(needle(n), upstream_id=None)).id)

    async def searcher() -> None:
        searches = 0
        while writing or searches < 3:
            before = set(stored)
            assert before <= await found(services, alice)
            searches += 1
            await asyncio.sleep(0.01)

    watching = asyncio.create_task(searcher())
    await asyncio.gather(*(writer(w * 1000) for w in range(4)))
    writing = False
    await watching
    assert await found(services, alice) == set(stored)
    assert len(stored) > fts.CHUNK  # more than one chunk of SQLite's index


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_commits_index_chunks_and_a_search_indexes_the_rest(
    services: Services, alice: int
) -> None:
    ids = [
        (await services.ingestor.accept(needle(n), upstream_id=None)).id
        for n in range(fts.CHUNK + 40)
    ]
    db = services.store.db

    async def indexed() -> list[int]:
        async with db.snapshot("test_read_index") as connection:
            return list(await connection.scalars(text(INDEXED)))

    # No search yet: the commits indexed whole chunks, in id order, and no more.
    assert await indexed() == ids[: fts.CHUNK]
    # Removed before and after they were indexed: neither kind is found, or left behind.
    gone = {ids[3], ids[-1], ids[-2]}
    async with db.transaction("test_remove") as connection:
        await connection.execute(delete(t.messages).where(t.messages.c.id.in_(gone)))
    assert await found(services, alice) == set(ids) - gone
    assert await indexed() == sorted(set(ids) - gone)
    # A message after the removed newest ones still goes in (ids only grow).
    later = (await services.ingestor.accept(needle(9999), upstream_id=None)).id
    assert later > ids[-1]
    assert await found(services, alice, "needle 9999") == {later}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_downgrading_past_chunked_indexing_indexes_what_was_missing(
    services: Services, alice: int
) -> None:
    from alembic import command

    def migrate(connection: Connection, step: str, revision: str) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        getattr(command, step)(config, revision)

    ids = [(await services.ingestor.accept(needle(n), upstream_id=None)).id for n in range(5)]
    db = services.store.db
    async with db.transaction("test_downgrade") as connection:
        await connection.run_sync(migrate, "downgrade", "0004")
    async with db.snapshot("test_read_index") as connection:
        assert list(await connection.scalars(text(INDEXED_BY_ID))) == ids
    async with db.transaction("test_upgrade") as connection:
        await connection.run_sync(migrate, "upgrade", head_revision())
    assert await found(services, alice) == set(ids)


async def test_a_search_finds_its_own_accounts_messages_among_interleaved_ones(
    services: Services, alice: int
) -> None:
    bob = (await services.accounts.add("bob", "pw", msisdns=("447700900002",))).id
    mine: set[int] = set()
    for n in range(30):  # the two accounts' messages alternate, as ids and in the index
        mine.add((await services.ingestor.accept(needle(n), upstream_id=None)).id)
        theirs = RawInbound(sender="447700900123", recipient="447700900002", text=b"needle")
        await services.ingestor.accept(theirs, upstream_id=None)
    assert await found(services, alice) == mine
    assert len(await found(services, bob)) == 30
    assert await found(services, alice, "needle 29") == {max(mine)}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_keeps_an_indexed_message_whose_text_changes(
    services: Services, alice: int
) -> None:
    ids = [(await services.ingestor.accept(needle(n), upstream_id=None)).id for n in range(3)]
    assert await found(services, alice) == set(ids)  # the search indexed them
    async with services.store.db.transaction("test_edit") as connection:
        await connection.execute(
            t.messages.update().where(t.messages.c.id == ids[1]).values(text="haystack")
        )
    assert await found(services, alice) == {ids[0], ids[2]}
    assert await found(services, alice, "haystack") == {ids[1]}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_postgresql_finds_matches_older_than_the_newest_it_reads_in_order(
    services: Services, alice: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smsinbox.store import postgres

    # A search reads the newest SEARCH_RECENT in order, then asks the trigram indexes.
    monkeypatch.setattr(postgres, "SEARCH_RECENT", 4)

    def hay(n: int) -> RawInbound:
        return RawInbound(sender="447700900123", recipient=ALICE_NUMBER, text=f"hay {n}".encode())

    older = [(await services.ingestor.accept(needle(n), upstream_id=None)).id for n in range(3)]
    for n in range(6):
        await services.ingestor.accept(hay(n), upstream_id=None)
    newer = (await services.ingestor.accept(needle(9), upstream_id=None)).id
    hits = await services.store.search_messages(
        alice, "needle", counterpart=None, locked=None, limit=3
    )
    assert [message.id for message in hits] == [newer, older[2], older[1]]
    assert await found(services, alice) == {*older, newer}
    assert await found(services, alice, "hay") == set(range(older[-1] + 1, newer))
