"""search index by account (SQLite): each account's entries together in every term's list

The index's entries were keyed by message id and tagged with their owner, so an account's
entries lay scattered through each term's list among every other account's, and a search
read pages of all of them: bare sqlite3 searched 6.4 times slower over a million messages
than over ten thousand. Keyed by `(account_id << 32) + seq` (store/fts.py), a search reads
only its account's stretch of each list; no owner tag is needed. How far the index has
reached is no longer its highest rowid, so a one-row table keeps it.

Every message is indexed here, as one bulk insert with the segments merged after it (over a
million messages, about 20 s). PostgreSQL's search is unchanged.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UPGRADE = [
    "DROP TRIGGER messages_search_delete",
    "DROP TRIGGER messages_search_update",
    "DROP TABLE messages_search",
    "CREATE VIRTUAL TABLE messages_search USING fts5(text, counterpart, tokenize='trigram')",
    "CREATE TABLE messages_search_progress (indexed_through INTEGER NOT NULL)",
    "INSERT INTO messages_search_progress VALUES ((SELECT coalesce(max(id), 0) FROM messages))",
    "INSERT INTO messages_search (rowid, text, counterpart)"
    " SELECT (account_id << 32) + seq, text, counterpart FROM messages ORDER BY account_id, seq",
    "INSERT INTO messages_search (messages_search) VALUES ('optimize')",
    """CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN
        DELETE FROM messages_search WHERE rowid = (old.account_id << 32) + old.seq;
    END""",
    """CREATE TRIGGER messages_search_update AFTER UPDATE OF text, counterpart, account_id, seq
        ON messages BEGIN
        UPDATE messages_search SET rowid = (new.account_id << 32) + new.seq, text = new.text,
            counterpart = new.counterpart WHERE rowid = (old.account_id << 32) + old.seq;
    END""",
]

# Revision 0008's index: keyed by id, tagged with the owner, holding every message up to
# its highest rowid.
DOWNGRADE = [
    "DROP TRIGGER messages_search_delete",
    "DROP TRIGGER messages_search_update",
    "DROP TABLE messages_search",
    "DROP TABLE messages_search_progress",
    "CREATE VIRTUAL TABLE messages_search USING fts5(owner, text, counterpart, tokenize='trigram')",
    "INSERT INTO messages_search (rowid, owner, text, counterpart)"
    " SELECT id, 'a' || account_id || 'z', text, counterpart FROM messages ORDER BY id",
    """CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN
        DELETE FROM messages_search WHERE rowid = old.id;
    END""",
    """CREATE TRIGGER messages_search_update AFTER UPDATE OF text, counterpart, account_id
        ON messages BEGIN
        UPDATE messages_search SET owner = 'a' || new.account_id || 'z', text = new.text,
            counterpart = new.counterpart WHERE rowid = old.id;
    END""",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in UPGRADE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in DOWNGRADE:
            op.execute(statement)
