"""Free space in a store's folder: checked before a series is written, and a full disk
translated where it is met.

A write that fails for space (ENOSPC, or EDQUOT: a quota) or an SQLite index that cannot
grow (SQLITE_FULL) becomes :class:`service.errors.InsufficientStorage` here, the store's
edge: the API answers 507 and background work waits for space instead of failing. A
quota is invisible to ``statvfs``, so a failed write also counts as "full" until the free
space grows or :data:`HOLD_S` has passed; then writes are tried again, so the service
recovers by itself once space is freed.
"""

from __future__ import annotations

import errno
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.errors import InsufficientStorage

log = logging.getLogger("service")

OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
SQLITE_FULL = 13
# After a write failed for space, how long the store counts as full unless free space grows.
HOLD_S = 30.0
# Growth of the free space that ends the hold at once (someone freed space).
FREED_BYTES = 2**20
RETRY_AFTER_S = 30


def is_out_of_space(exc: BaseException) -> bool:
    """A file write or an SQLite statement that failed because the disk or quota is full."""
    if isinstance(exc, OSError):
        return exc.errno in OUT_OF_SPACE
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL \
            or "database or disk is full" in str(exc)
    return False


def mib(n: int | float) -> str:
    return f"{n / 2**20:.1f} MiB"


class Space:
    """The free space of the filesystem that holds ``folder``, seen as one store.

    ``name`` names the store in messages (e.g. "the result store (DATA_DIR)");
    ``min_free_bytes`` is kept free of new series (MIN_FREE_BYTES). A series refused, or a
    write that failed, keeps the store "full" (``/readyz`` 503) until the free space it
    lacked is there or :data:`HOLD_S` has passed.
    """

    def __init__(self, folder: Path, name: str, min_free_bytes: int = 0) -> None:
        self.folder = Path(folder)
        self.name = name
        self.min_free_bytes = min_free_bytes
        self._lock = threading.Lock()
        self._full: tuple[float, int] | None = None  # (monotonic time, free bytes wanted)

    def free(self) -> int:
        return shutil.disk_usage(self.folder).free

    def _held(self, free: int) -> int | None:
        """The free bytes a recent refusal or failure wanted, while they are not there."""
        with self._lock:
            if self._full is None:
                return None
            since, wanted = self._full
            if time.monotonic() - since < HOLD_S and free < wanted:
                return wanted
            self._full = None
            return None

    def _note_full(self, wanted: int) -> None:
        with self._lock:
            self._full = (time.monotonic(), wanted)

    def problem(self, needed: int = 0, keep_reserve: bool = True) -> str | None:
        """Why ``needed`` more bytes cannot be written now (None: they can). A new series
        must leave MIN_FREE_BYTES free; already accepted work (``keep_reserve=False``)
        may use it."""
        free = self.free()
        wanted = needed + (self.min_free_bytes if keep_reserve else 0)
        held = self._held(free)
        if held is not None:
            return (f"{self.name} is full: {mib(free)} free, and the last series refused "
                    f"there needed {mib(held)}")
        if free < wanted:
            return (f"{self.name} has {mib(free)} free and needs {mib(wanted)} for this "
                    f"series (MIN_FREE_BYTES {mib(self.min_free_bytes)} kept free)")
        return None

    def check(self, needed: int = 0, spooled: int = 0) -> None:
        """InsufficientStorage unless ``needed`` bytes and the reserve are free. ``spooled``:
        what the series holds on this disk meanwhile (its upload), freed when it is refused
        and needed again by a retry, so the store stays full until those are free too."""
        free = self.free()
        wanted = needed + self.min_free_bytes
        if free < wanted:
            self._note_full(wanted + spooled)
            raise InsufficientStorage(
                f"{self.name} has {mib(free)} free and needs {mib(wanted)} for this series "
                f"(MIN_FREE_BYTES {mib(self.min_free_bytes)} kept free): nothing of it was "
                "kept; retry once space is freed", retry_after_s=RETRY_AFTER_S)

    def full(self, needed: int = 0) -> InsufficientStorage:
        """Record a write that failed for space; the error to raise in its place."""
        free = self.free()
        wanted = needed + self.min_free_bytes
        # statvfs may not see what filled up (a quota): any space freed ends the hold.
        self._note_full(max(free + FREED_BYTES, wanted))
        log.warning("%s is full (%s free): a write failed for lack of space", self.name,
                    mib(free))
        return InsufficientStorage(
            f"{self.name} is full ({mib(free)} free; about {mib(wanted)} needed, "
            f"MIN_FREE_BYTES {mib(self.min_free_bytes)} included): nothing of it was kept; "
            "retry once space is freed", retry_after_s=RETRY_AFTER_S)

    @contextmanager
    def guard(self, needed: int = 0) -> Iterator[None]:
        """Writes inside: a full disk or quota raises InsufficientStorage, not OSError."""
        try:
            yield
        except (OSError, sqlite3.Error) as exc:
            if is_out_of_space(exc):
                raise self.full(needed) from exc
            raise
