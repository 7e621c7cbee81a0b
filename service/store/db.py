"""SQLite transactions that cannot leave a connection stuck half-way."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN ... COMMIT, or ROLLBACK when anything in between raises.

    Without the rollback, an error between BEGIN and COMMIT leaves the
    connection inside a transaction, and every later BEGIN fails; so does a COMMIT
    that fails (SQLITE_FULL: the disk filled up).
    """
    db.execute("BEGIN")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if getattr(db, "in_transaction", True):
            db.execute("ROLLBACK")
        raise
