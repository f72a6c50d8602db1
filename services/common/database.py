"""SQLite opened the way every SentryCam store needs it: durable, shared between threads."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

# What a failed write of a store raises: a locked database (another process holds it), a full disk. The
# message being stored is then not acknowledged, so that the broker sends it again.
STORE_ERRORS = (sqlite3.Error, OSError)


def open_durable(path: Path, schema: str) -> sqlite3.Connection:
    """A connection whose committed rows survive a crash or a power cut (WAL + synchronous FULL), in
    autocommit mode so each store decides its own transactions, usable from any thread under the store's
    own lock."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """The block's statements committed together, or none of them (for a connection of open_durable, in
    autocommit mode). BEGIN IMMEDIATE takes the write lock at once, so that a busy database fails here."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already (a full disk); a second ROLLBACK would hide why.
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def table_columns(db: sqlite3.Connection, table: str) -> set[str]:
    """The table's column names; empty when there is no such table yet."""
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def add_columns(db: sqlite3.Connection, table: str, added: Sequence[tuple[str, str]]) -> None:
    """Columns added since the table's first release, each (name, definition), added to an older table that
    lacks them. A table not made yet is left to its schema, which has them all."""
    have = table_columns(db, table)
    for name, definition in added:
        if have and name not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
