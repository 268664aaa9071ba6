"""SQLite's full-text index of messages: each account's entries together, kept in chunks
behind the messages it indexes.

An entry's rowid is its message's place in its account, `(account_id << 32) + seq`, not
the message's id. Every account's messages share the index, and a term's list of entries
(for "mes" of "message", nearly every message there is) is in rowid order: keyed by id, an
account's entries lay scattered through every list, and a search read pages of all of them
for each of its own, taking longer as other accounts stored more (6.4 times longer over a
million messages than over ten thousand, bare sqlite3). Keyed by account, a search names
its account's rowid range and reads only that stretch of each list. A message's account
and sequence never change, and an account's sequences grow with its messages' ids (the one
writer assigns both in commit order), so the key is as lasting as the id. An account holds
up to 2**32 sequences before its keys would reach the next account's.

FTS5 writes a segment of its index at every commit that changed it and merges segments as
they pile up, so indexing a few dozen messages per ingest batch (as a trigger did) cost
more than the rest of the batch's statements together; indexed a chunk at a time, the same
messages cost a tenth of that. The index holds exactly the messages up to the id in
`messages_search_progress`, because messages' ids only grow (AUTOINCREMENT) and chunks go
in id order; the delete and update triggers keep what it holds. SqliteEngine indexes what
it lacks when a commit leaves at least CHUNK behind, and everything before a search, so a
search still sees every message committed before it began.
"""

from __future__ import annotations

import sqlite3

# Messages indexed at a time. A commit that leaves this many unindexed indexes them first.
CHUNK = 1024
# An entry's rowid: its account in the high bits, the message's sequence in the low ones.
ACCOUNT_SHIFT = 32

BACKLOG = (
    "SELECT coalesce((SELECT max(id) FROM messages), 0),"
    " (SELECT indexed_through FROM messages_search_progress)"
)
_CHUNK_END = "SELECT max(id) FROM (SELECT id FROM messages WHERE id > ? ORDER BY id LIMIT ?)"
# The key is spelled out (ACCOUNT_SHIFT is 32) so the statements stay literal SQL.
_INDEX = (
    "INSERT INTO messages_search (rowid, text, counterpart)"
    " SELECT (account_id << 32) + seq, text, counterpart"
    " FROM messages WHERE id > ? AND id <= ? ORDER BY id"
)
# Every message at once, in key order, as a bulk load (bench/datagen.py) writes it.
INDEX_ALL = (
    "INSERT INTO messages_search (rowid, text, counterpart)"
    " SELECT (account_id << 32) + seq, text, counterpart FROM messages ORDER BY account_id, seq"
)
_PROGRESS = "UPDATE messages_search_progress SET indexed_through = ?"
# An imported account's messages whose ids the index has already gone past (the store held
# messages of higher ids): chunks never come back for them.
_INDEX_ACCOUNT_BEHIND = (
    "INSERT INTO messages_search (rowid, text, counterpart)"
    " SELECT (account_id << 32) + seq, text, counterpart FROM messages WHERE account_id = ?"
    " AND id <= (SELECT indexed_through FROM messages_search_progress) ORDER BY seq"
)


def account_keys(account_id: int) -> tuple[int, int]:
    """The first and last rowid an account's entries may have."""
    first = account_id << ACCOUNT_SHIFT
    return first, first + (1 << ACCOUNT_SHIFT) - 1


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
    # A message newer than `indexed` exists (newest > indexed): the chunk is not empty.
    (through,) = connection.execute(_CHUNK_END, (indexed, CHUNK)).fetchone()
    connection.execute(_INDEX, (indexed, through))
    connection.execute(_PROGRESS, (through,))
    return True


def index_imported(connection: sqlite3.Connection, account_id: int) -> None:
    """In the open write transaction: index an account just written with ids of its own (an
    import), and every message after the index's progress, so the index again holds
    exactly the messages up to its progress and is current."""
    connection.execute(_INDEX_ACCOUNT_BEHIND, (account_id,))
    while index_chunk(connection, at_least=1):
        pass
