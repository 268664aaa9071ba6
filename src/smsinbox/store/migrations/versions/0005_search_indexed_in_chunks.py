"""search index in chunks (SQLite): messages indexed for search after they are stored

FTS5 writes a new segment of its index at every commit that changed it, and merges
segments as they pile up. Kept by a trigger, every ingest batch of a few dozen messages
paid a segment and its share of the merging: bare sqlite3 ingest spent 176-201 us of CPU a
message with the trigger against 98-108 us with the same messages indexed a thousand at a
time. From this revision the SQLite engine indexes what the index lacks in chunks
(SqliteEngine: when a commit leaves enough behind, and before every search), so a search
still sees every message committed before it. The index holds exactly the messages up to
its highest rowid: messages' ids only grow (AUTOINCREMENT), and chunks go in id order.

PostgreSQL's trigram indexes are GIN indexes with their own pending list; nothing changes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

INSERT_TRIGGER = """CREATE TRIGGER messages_search_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_search (rowid, owner, text, counterpart)
        VALUES (new.id, 'a' || new.account_id || 'z', new.text, new.counterpart);
    END"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER messages_search_insert")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # What the engine had not indexed yet, then the trigger for every message after.
        op.execute(
            "INSERT INTO messages_search (rowid, owner, text, counterpart)"
            " SELECT id, 'a' || account_id || 'z', text, counterpart FROM messages"
            " WHERE id > coalesce((SELECT rowid FROM messages_search"
            " ORDER BY rowid DESC LIMIT 1), 0) ORDER BY id"
        )
        op.execute(INSERT_TRIGGER)
