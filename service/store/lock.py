"""One service process per data folder: an exclusive lock on ``DATA_DIR/service.lock``.

Two processes on one folder (two replicas started by mistake, an upgrade overlapping the
old process) would each clear the other's request spool, take the same received series
and encode the same analyses. The second one must refuse to start instead, naming the
folder and the process that holds it.

The lock is ``flock`` on an open file, held for the process's life: the kernel drops it
when the process ends however it ends (SIGKILL included), so no stale lock is ever left
to remove by hand. Holding it again in the same process (several apps in one test
process, a restart of the app inside it) is counted, not refused.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
from pathlib import Path

from service.errors import DataDirInUse

LOCK_FILE = "service.lock"

_held: dict[Path, tuple[int, int]] = {}  # folder -> (fd, holds) in this process
_guard = threading.Lock()


def hold_data_dir(data_dir: Path) -> Path:
    """Take (or take again, in this process) the folder's lock; returns the folder.

    Raises :class:`DataDirInUse` naming the holder's pid and host when another process
    holds it."""
    folder = Path(data_dir).resolve()
    with _guard:
        if folder in _held:
            fd, holds = _held[folder]
            _held[folder] = (fd, holds + 1)
            return folder
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DataDirInUse(
                f"DATA_DIR {folder} is in use by another service process ({holder}); one "
                "process per data folder: stop that one first, or give this one another "
                "DATA_DIR") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        _held[folder] = (fd, 1)
        return folder


def release_data_dir(data_dir: Path) -> None:
    """Give back one hold; the lock goes with the last (or with the process)."""
    folder = Path(data_dir).resolve()
    with _guard:
        if folder not in _held:
            return
        fd, holds = _held[folder]
        if holds > 1:
            _held[folder] = (fd, holds - 1)
            return
        del _held[folder]
        os.close(fd)  # closing the only descriptor releases the flock


def _read_holder(fd: int) -> str:
    """What the holder wrote ("pid N on HOST"); it may not have written it yet."""
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "pid not yet written"
