"""A full filesystem without root: files opened for writing under one folder take a budget
of bytes, then fail with ENOSPC, and ``shutil.disk_usage`` of that folder says what is
left. Shared by the storage tests of the API, the inbox and the batch."""

from __future__ import annotations

import builtins
import errno
import os
import shutil
from pathlib import Path


class _BudgetFile:
    def __init__(self, file, disk: FullDisk) -> None:
        self._file = file
        self._disk = disk

    def write(self, data) -> int:
        size = len(data)
        if size > self._disk.budget:
            if not self._disk.partial:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            part = self._disk.budget
            self._file.write(data[:part])
            self._disk.budget = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.budget -= size
        return self._file.write(data)

    def __enter__(self):
        self._file.__enter__()
        return self

    def __exit__(self, *exc):
        return self._file.__exit__(*exc)

    def __iter__(self):
        return iter(self._file)

    def __getattr__(self, name):
        return getattr(self._file, name)


class FullDisk:
    """``budget``: bytes still writable under ``root``; ``reported``: the free space
    ``shutil.disk_usage`` gives (the budget unless set apart, as a quota would);
    ``partial``: a write too large for the budget writes what fits before ENOSPC (else
    nothing, and smaller writes may still fit)."""

    def __init__(self, root: Path, monkeypatch, budget: int = 2**40) -> None:
        self.root = str(Path(root).resolve())
        self.budget = budget
        self.reported: int | None = None
        self.partial = True
        real_open, real_fdopen, real_usage = builtins.open, os.fdopen, shutil.disk_usage

        def writing(mode) -> bool:
            return isinstance(mode, str) and any(c in mode for c in "wax+")

        def under(path) -> bool:
            try:
                return str(Path(os.fspath(path)).resolve()).startswith(self.root)
            except TypeError:
                return False

        def opener(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            return _BudgetFile(f, self) if writing(mode) and under(file) else f

        def fdopener(fd, mode="r", *args, **kwargs):
            f = real_fdopen(fd, mode, *args, **kwargs)
            path = os.readlink(f"/proc/self/fd/{fd}")
            return _BudgetFile(f, self) if writing(mode) and under(path) else f

        def usage(path):
            real = real_usage(path)
            if not under(path):
                return real
            free = self.budget if self.reported is None else self.reported
            return type(real)(real.total, real.total - free, free)

        monkeypatch.setattr(builtins, "open", opener)
        monkeypatch.setattr(os, "fdopen", fdopener)
        monkeypatch.setattr(shutil, "disk_usage", usage)

    def fill(self, budget: int = 0, reported: int | None = None) -> None:
        self.budget, self.reported = budget, reported

    def free_up(self) -> None:
        self.budget, self.reported = 2**40, None
