"""Series received by STOW-RS, kept until they are complete enough to analyse.

A PACS may send one series in one request or in many (Orthanc's DICOMweb
client splits large transfers; a modality may still be sending). The rule:

* a received series is analysed once **no new instance of it has arrived
  for ``STOW_QUIET_PERIOD_S``** seconds (default 10);
* instances that arrive after that analysis reopen the series; when it
  has gone quiet again it is analysed again with *all* its instances, and
  that report says which analysis it supersedes and why;
* an instance received again with identical bytes changes nothing, so a
  PACS re-sending a series does not cause a second analysis;
* a series that cannot be analysed (one slice, inconsistent geometry...)
  is marked failed with the reason; ``GET /v1/series/{uid}`` shows it.

Files are written atomically (temp file, fsync, rename) and the index is
SQLite, so after a crash or restart every received instance is still
there and series caught mid-analysis are simply analysed again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from service.dicom.uids import is_uid
from service.errors import SeriesFull
from service.store.db import transaction
from service.store.files import write_atomic
from service.store.space import Space


@dataclass(frozen=True)
class ReceivedSeries:
    series_instance_uid: str
    study_instance_uid: str
    state: str  # waiting | analysing | done | failed
    instances: int
    first_received_at: float
    last_received_at: float
    analyses: list[str]  # analysis ids, oldest first
    analysed_instances: int  # instances in the newest analysis
    error: dict | None  # {"code", "message"} of the last failure
    # Why the newest analysis superseded the one before (an instance's later copy...).
    note: str | None = None
    # Instances that arrived again with other bytes since the last analysis began.
    replaced_instances: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class Inbox:
    _FIELDS = ("series_instance_uid", "study_instance_uid", "state", "instances",
               "first_received_at", "last_received_at", "analyses", "analysed_instances",
               "error", "note")

    def __init__(self, root: Path, max_instances: int | None = None,
                 space: Space | None = None) -> None:
        # Without a cap one sender could fill the disk with a single series; concurrent
        # requests may pass it by a few, and claim's caller checks again before reading.
        self.max_instances = max_instances
        # DATA_DIR's free-space rule (shared with the result store): a full disk is
        # InsufficientStorage, and the instance is not kept.
        self.space = space or Space(Path(root), "the STOW-RS inbox (DATA_DIR)")
        self.folder = Path(root) / "inbox"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(Path(root) / "inbox.sqlite", check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS series (series_instance_uid TEXT PRIMARY KEY, "
            "study_instance_uid TEXT NOT NULL, state TEXT NOT NULL, instances INTEGER NOT NULL, "
            "first_received_at REAL NOT NULL, last_received_at REAL NOT NULL, "
            "analyses TEXT NOT NULL DEFAULT '[]', analysed_instances INTEGER NOT NULL DEFAULT 0, "
            "error TEXT, reopened INTEGER NOT NULL DEFAULT 0)")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(series)")}
        if "failures" not in columns:  # an inbox made before internal errors were retried
            self._db.execute("ALTER TABLE series ADD COLUMN failures INTEGER NOT NULL "
                             "DEFAULT 0")
        if "replaced" not in columns:  # ... or before another copy of an instance was noted
            self._db.execute("ALTER TABLE series ADD COLUMN replaced TEXT NOT NULL "
                             "DEFAULT '[]'")
            self._db.execute("ALTER TABLE series ADD COLUMN note TEXT")
        # A crash mid-analysis: analyse again (the analysis itself was not stored, or was
        # stored and will be superseded by an identical one; neither loses data).
        self._db.execute("UPDATE series SET state = 'waiting' WHERE state = 'analysing'")

    def _series_dir(self, series_uid: str) -> Path:
        return _inside(self.folder, series_uid)

    def add(self, study_uid: str, series_uid: str, sop_uid: str, data: bytes,
            now: float) -> bool:
        """Keep one instance; False when the same bytes were already there (no change).

        Another copy of an instance already held (other bytes) is kept beside it, not over
        it: the analysis decides between them by the service's one rule
        (:mod:`service.dicom.instances`: a cut copy is a warning, different images refuse
        the series with ``conflicting_instances``), as for an upload."""
        copy_of = None
        folder = self._series_dir(series_uid)
        with self.space.guard(len(data)):
            folder.mkdir(exist_ok=True)
        path = _inside(folder, sop_uid, ".dcm")
        if path.exists():
            if path.read_bytes() == data:
                return False
            digest = hashlib.sha256(data).hexdigest()[:16]
            if any(folder.glob(f"{path.stem}.copy-*{digest}.dcm")):
                return False  # this copy is held already
            # Named by its receipt time: arrival order, for DUPLICATE_INSTANCES' keep-first
            # and keep-last, survives a restart and a copy of the folder.
            path = folder / f"{path.stem}.copy-{round(now * 1e9):019d}-{digest}.dcm"
            copy_of = sop_uid
        if self.max_instances is not None and not path.exists() \
                and self._instances(series_uid) >= self.max_instances:
            raise SeriesFull(f"the series already holds {self.max_instances} instances, "
                             "the most one analysis reads (MAX_FILES)")
        with self.space.guard(len(data)):
            write_atomic(path, data)  # whole or not at all; the rename survives a power cut
            try:
                self._index_instance(folder, study_uid, series_uid, now)
            except BaseException:
                path.unlink(missing_ok=True)  # refused to the sender: not kept either
                raise
        if copy_of is not None:
            self._copy_arrived(series_uid, copy_of)
        return True

    def _index_instance(self, folder: Path, study_uid: str, series_uid: str,
                        now: float) -> None:
        with self._lock:
            instances = sum(1 for _ in folder.glob("*.dcm"))
            with transaction(self._db):
                row = self._db.execute("SELECT state FROM series WHERE series_instance_uid = ?",
                                       (series_uid,)).fetchone()
                if row is None:
                    self._db.execute("INSERT INTO series (series_instance_uid, study_instance_uid, "
                                     "state, instances, first_received_at, last_received_at) "
                                     "VALUES (?, ?, 'waiting', ?, ?, ?)",
                                     (series_uid, study_uid, instances, now, now))
                else:
                    # Analysing: the running analysis finishes, then the series waits again.
                    state = "analysing" if row[0] == "analysing" else "waiting"
                    self._db.execute("UPDATE series SET state = ?, instances = ?, "
                                     "last_received_at = ?, reopened = 1 WHERE "
                                     "series_instance_uid = ?", (state, instances, now, series_uid))

    def _instances(self, series_uid: str) -> int:
        """Instances counted at the last ``add`` (the index, not another folder scan)."""
        with self._lock:
            row = self._db.execute("SELECT instances FROM series WHERE series_instance_uid = ?",
                                   (series_uid,)).fetchone()
        return row[0] if row else 0

    def due(self, now: float, quiet_s: float) -> list[str]:
        """Series waiting with nothing received for ``quiet_s`` seconds, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT series_instance_uid FROM series WHERE state = "
                                    "'waiting' AND last_received_at <= ? ORDER BY "
                                    "last_received_at", (now - quiet_s,)).fetchall()
        return [r[0] for r in rows]

    def claim(self, series_uid: str) -> tuple[list[Path], ReceivedSeries | None]:
        """Mark the series as being analysed; its files and its state before.

        The files are listed under the lock that ``add`` counts them under, so
        the state and the file list are of the same moment; an instance added
        afterwards reopens the series (analysed again), it is never half-read.
        """
        with self._lock:
            before = self._get(series_uid)
            self._db.execute("UPDATE series SET state = 'analysing', reopened = 0 WHERE "
                             "series_instance_uid = ?", (series_uid,))
            files = sorted(self._series_dir(series_uid).glob("*.dcm"), key=arrival)
            (replaced,) = self._db.execute("SELECT replaced FROM series WHERE "
                                           "series_instance_uid = ?", (series_uid,)).fetchone()
            self._db.execute("UPDATE series SET replaced = '[]' WHERE series_instance_uid = ?",
                             (series_uid,))
        if before is not None:
            before = replace(before, replaced_instances=tuple(json.loads(replaced)))
        return files, before

    def finish(self, series_uid: str, analysis_id: str, instances: int,
               note: str | None = None) -> None:
        """Done with ``analysis_id``; ``note`` says why it supersedes the one before."""
        self._end(series_uid, "done", analysis_id=analysis_id, instances=instances)
        with self._lock:
            self._db.execute("UPDATE series SET note = ? WHERE series_instance_uid = ?",
                             (note, series_uid))

    def _copy_arrived(self, series_uid: str, sop_uid: str) -> None:
        """Note an instance held already that arrived again with other bytes: the next
        analysis says so (with keep-last it uses this copy, and supersedes the last)."""
        with self._lock, transaction(self._db):
            (replaced,) = self._db.execute("SELECT replaced FROM series WHERE "
                                           "series_instance_uid = ?", (series_uid,)).fetchone()
            uids = json.loads(replaced)
            if sop_uid not in uids:
                self._db.execute("UPDATE series SET replaced = ? WHERE series_instance_uid = ?",
                                 (json.dumps([*uids, sop_uid]), series_uid))

    def retry_later(self, series_uid: str, now: float, max_failures: int) -> bool:
        """After an internal error: wait again (analysed after the quiet period) unless it
        has failed ``max_failures`` times; True when it will be retried."""
        with self._lock, transaction(self._db):
            (failures,) = self._db.execute(
                "SELECT failures FROM series WHERE series_instance_uid = ?",
                (series_uid,)).fetchone()
            if failures + 1 >= max_failures:
                self._db.execute("UPDATE series SET failures = ? WHERE series_instance_uid = ?",
                                 (failures + 1, series_uid))
                return False
            self._db.execute("UPDATE series SET state = 'waiting', failures = ?, "
                             "last_received_at = ? WHERE series_instance_uid = ?",
                             (failures + 1, now, series_uid))
            return True

    def postpone(self, series_uid: str, code: str, message: str) -> None:
        """Back to waiting, not a failure (the store is full, the encoder's queue too): it
        is analysed once they have room; ``GET /v1/series/{uid}`` says why it waits."""
        with self._lock:
            self._db.execute("UPDATE series SET state = 'waiting', error = ? WHERE "
                             "series_instance_uid = ?",
                             (json.dumps({"code": code, "message": message}), series_uid))

    def fail(self, series_uid: str, code: str, message: str) -> None:
        self._end(series_uid, "failed", error={"code": code, "message": message})

    def _end(self, series_uid: str, state: str, analysis_id: str | None = None,
             instances: int | None = None, error: dict | None = None) -> None:
        with self._lock:
            with transaction(self._db):
                analyses, reopened, analysed = self._db.execute(
                    "SELECT analyses, reopened, analysed_instances FROM series WHERE "
                    "series_instance_uid = ?", (series_uid,)).fetchone()
                ids = json.loads(analyses)
                if analysis_id and analysis_id not in ids:
                    ids.append(analysis_id)
                self._db.execute(
                    "UPDATE series SET state = ?, analyses = ?, analysed_instances = ?, "
                    "error = ? WHERE series_instance_uid = ?",
                    ("waiting" if reopened else state, json.dumps(ids),
                     analysed if instances is None else instances,
                     json.dumps(error) if error else None, series_uid))

    def get(self, series_uid: str) -> ReceivedSeries | None:
        with self._lock:
            return self._get(series_uid)

    def _get(self, series_uid: str) -> ReceivedSeries | None:
        row = self._db.execute(f"SELECT {', '.join(self._FIELDS)} FROM series WHERE "
                               "series_instance_uid = ?", (series_uid,)).fetchone()
        if row is None:
            return None
        values = dict(zip(self._FIELDS, row, strict=True))
        values["analyses"] = json.loads(values["analyses"])
        values["error"] = json.loads(values["error"]) if values["error"] else None
        return ReceivedSeries(**values)

    def delete(self, series_uid: str) -> bool:
        """Forget a received series and remove its instances; False when there was none."""
        folder = self._series_dir(series_uid)
        with self._lock:
            cursor = self._db.execute("DELETE FROM series WHERE series_instance_uid = ?",
                                      (series_uid,))
        shutil.rmtree(folder, ignore_errors=True)
        return cursor.rowcount > 0

    def older_than(self, cutoff: float) -> list[str]:
        """Series whose last instance arrived before ``cutoff`` (seconds since the epoch)."""
        with self._lock:
            return [row[0] for row in self._db.execute(
                "SELECT series_instance_uid FROM series WHERE last_received_at < ? AND "
                "state != 'analysing'", (cutoff,))]

    def close(self) -> None:
        self._db.close()


def arrival(path: Path) -> tuple[str, int]:
    """Sort key of an instance's copies in arrival order: the first copy (``UID.dcm``),
    then later ones by the receipt time in their name (``UID.copy-NS-DIGEST.dcm``; those
    kept before names carried it, by modification time)."""
    uid, _, rest = path.name.removesuffix(".dcm").partition(".copy-")
    if not rest:
        return uid, 0
    stamp = rest.split("-")[0]
    return uid, int(stamp) if len(stamp) == 19 and stamp.isdigit() else path.stat().st_mtime_ns


def _inside(folder: Path, uid: str, suffix: str = "") -> Path:
    """``folder/uid+suffix``, for a valid UID only, and never outside ``folder``."""
    if not is_uid(uid):
        raise ValueError(f"not a DICOM UID: {uid!r}")
    path = folder / f"{uid}{suffix}"
    if path.resolve().parent != folder.resolve():
        raise ValueError(f"not a DICOM UID: {uid!r}")
    return path
