"""Durable writes: a file appears whole or not at all, and its rename survives a power cut.

Shared by the result store, the STOW-RS inbox and the batch command's outputs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

# fsyncs of several files issued at once share the filesystem's journal commits, where one
# after another each waits for a commit of its own: the files of one analysis took 2-3x
# less time to make durable on this project's hosts (ext4, docs/experiments.md,
# "Performance"). A few threads do it; they wait on the disk, not on the GIL.
_SYNC_THREADS = 4
_sync_pool: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _sync_pool
    if _sync_pool is None:
        _sync_pool = ThreadPoolExecutor(_SYNC_THREADS, thread_name_prefix="fsync")
    return _sync_pool


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(paths_and_data: Mapping[Path, bytes]) -> None:
    """Write each file and make its bytes durable, the fsyncs all issued at once; every
    file is durable when this returns (the first error is raised, after all have ended)."""
    with contextlib.ExitStack() as stack:
        _write_and_sync([(stack.enter_context(open(path, "wb")), data)
                         for path, data in paths_and_data.items()])


def _write_and_sync(files: list[tuple[BinaryIO, bytes]]) -> None:
    for f, data in files:
        f.write(data)
        f.flush()
    if len(files) == 1:
        os.fsync(files[0][0].fileno())
        return
    for done in [_pool().submit(os.fsync, f.fileno()) for f, _ in files]:
        done.result()


def write_atomic(path: Path, data: bytes, make_folder: bool = True) -> None:
    """``data`` at ``path`` through a temporary file of its own beside it and a rename;
    without ``make_folder``, a missing folder is a FileNotFoundError (it was removed)."""
    write_all_atomic(Path(path).parent, {Path(path).name: data}, make_folder)


def write_all_atomic(folder: Path, files: Mapping[str, bytes], make_folder: bool = True,
                     staging: Path | None = None) -> None:
    """Files in ``folder``, each whole or not at all: written to temporary files of their own
    beside their names and fsynced together, then renamed in the given order, and the
    folder fsynced once. After a crash any prefix of the renames may be there, or in
    principle any subset (a reader that needs several of them checks for all); without
    ``make_folder``, a missing folder is a FileNotFoundError (it was removed).

    ``staging``: where the temporary files are made instead (on the same file system), so
    that a process killed mid-write leaves them in one folder its owner clears at start
    rather than in ``folder``."""
    folder = Path(folder)
    if make_folder:
        folder.mkdir(parents=True, exist_ok=True)
    temporary: dict[str, Path] = {}
    try:
        with contextlib.ExitStack() as stack:
            opened = []
            for name, data in files.items():
                fd, tmp = tempfile.mkstemp(dir=staging or folder, prefix=f".{name}.",
                                           suffix=".tmp")
                temporary[name] = Path(tmp)
                try:
                    opened.append((stack.enter_context(os.fdopen(fd, "wb")), data))
                except BaseException:
                    os.close(fd)
                    raise
            _write_and_sync(opened)
        for name, tmp in temporary.items():
            os.replace(tmp, folder / name)
    except BaseException:
        for tmp in temporary.values():
            tmp.unlink(missing_ok=True)
        raise
    fsync_dir(folder)
