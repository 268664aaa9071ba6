"""SQLite's full-text index of messages, kept in chunks behind the messages it indexes.

FTS5 writes a segment of its index at every commit that changed it and merges segments as
they pile up, so indexing a few dozen messages per ingest batch (as a trigger did) cost
more than the rest of the batch's statements together; indexed a chunk at a time, the same
messages cost a tenth of that. The index holds exactly the messages up to its highest
rowid, because messages' ids only grow (AUTOINCREMENT) and chunks go in id order; the
delete and update triggers keep what it holds. SqliteEngine indexes what it lacks when a
commit leaves at least CHUNK behind, and everything before a search, so a search still
sees every message committed before it began.
"""

from __future__ import annotations

import sqlite3

# Messages indexed at a time. A commit that leaves this many unindexed indexes them first.
CHUNK = 1024

BACKLOG = (
    "SELECT coalesce((SELECT max(id) FROM messages), 0),"
    " coalesce((SELECT rowid FROM messages_search ORDER BY rowid DESC LIMIT 1), 0)"
)
_INDEX = (
    "INSERT INTO messages_search (rowid, owner, text, counterpart)"
    " SELECT id, 'a' || account_id || 'z', text, counterpart FROM messages"
    " WHERE id > ? ORDER BY id LIMIT ?"
)


def newest_and_indexed(connection: sqlite3.Connection) -> tuple[int, int]:
    """The newest message's id and the newest indexed: a bound on what the index lacks."""
    newest, indexed = connection.execute(BACKLOG).fetchone()
    return int(newest), int(indexed)


def index_chunk(connection: sqlite3.Connection, *, at_least: int, up_to: int | None = None) -> bool:
    """In the open write transaction: index the next CHUNK messages if at least `at_least`
    (of those up to id `up_to`) may be missing; False if nothing was to be indexed."""
    newest, indexed = newest_and_indexed(connection)
    if up_to is not None:
        newest = min(newest, up_to)
    if newest - indexed < at_least:
        return False
    connection.execute(_INDEX, (indexed, CHUNK))
    return True
