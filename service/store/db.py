"""SQLite transactions that cannot leave a connection stuck half-way."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN ... COMMIT, or ROLLBACK when anything in between raises.

    Without the rollback, an error between BEGIN and COMMIT leaves the
    connection inside a transaction, and every later BEGIN fails.
    """
    db.execute("BEGIN")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
