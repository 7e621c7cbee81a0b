"""Result store: one folder per analysis plus an SQLite index (the embedded default).

An analysis is written to a temporary folder, fsynced and renamed into
place, then indexed in one SQLite transaction; only then is it answered.
A crash leaves either no trace or a complete folder, and folders missing
from the index (crash between rename and insert, or a power cut that lost
the row: it is committed without waiting for the disk) are re-indexed at start.

When a DICOMweb destination is configured, the same transaction queues the
push of the analysis' SEG and SR (table ``pushes``), so a push can fail,
wait or be interrupted by a restart but is never lost; its state is shown
with the report (``store_back``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import threading
from pathlib import Path

from service.errors import NotFound
from service.store.db import transaction
from service.store.files import fsync_dir, write_all_atomic, write_synced
from service.store.space import Space

ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
FILES = {"report": "report.json", "seg": "seg.dcm", "sr": "sr.dcm", "arrays": "arrays.npz",
         "identity": "identity.json", "sources": "sources.zip", "spread": "spread.npz",
         "encoding_error": "encoding-error.json"}
# Stored before the answer: what the SEG and SR are encoded from (service.encoding).
ENCODER_INPUTS = ("arrays", "sources")
# Written after it (the SR renamed last); both there: the encoding is complete.
ENCODED = ("seg", "sr")
# Whose scan an analysis is, for the reader to confirm (the front page, the viewer): kept in
# the index beside the report, never in the report (the contract's fields) nor in a log.
IDENTITY = ("patient_name", "patient_id", "study_date", "series_description")


# The SEG and SR's share of what an analysis stores before its answer (arrays, headers):
# checked for with the analysis, so that its encoding finds room.
ENCODED_SHARE = 0.25

RECENT = ("id", "created_at", "pipeline", "series_instance_uid", "scar_percent", "verdict",
          *IDENTITY)


class ResultStore:
    def __init__(self, root: Path, push_to: str | None = None,
                 space: Space | None = None) -> None:
        """``push_to``: the DICOMweb destination, for analyses recovered at start;
        ``space``: the free space rule of ``root``'s filesystem (none kept by default)."""
        self.root = Path(root)
        self.push_to = push_to
        self.space = space or Space(self.root, "the result store (DATA_DIR)")
        self.analyses = self.root / "analyses"
        self.staging = self.root / "staging"
        self.analyses.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / "index.sqlite", check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS analyses (id TEXT PRIMARY KEY, "
                         "created_at TEXT NOT NULL, pipeline TEXT NOT NULL, "
                         "series_instance_uid TEXT NOT NULL, scar_percent REAL NOT NULL, "
                         "verdict TEXT)")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(analyses)")}
        if "verdict" not in columns:  # an index made before the quality verdict existed
            self._db.execute("ALTER TABLE analyses ADD COLUMN verdict TEXT")
        if "fingerprint" not in columns:  # ... or before received series were fingerprinted
            self._db.execute("ALTER TABLE analyses ADD COLUMN fingerprint TEXT")
        for column in IDENTITY:  # ... or before the index showed whose scan it was
            if column not in columns:
                self._db.execute(f"ALTER TABLE analyses ADD COLUMN {column} TEXT")
        self._db.execute("CREATE TABLE IF NOT EXISTS pushes (id TEXT PRIMARY KEY, "
                         "destination TEXT NOT NULL, status TEXT NOT NULL, "
                         "attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, "
                         "last_attempt_at REAL, last_error TEXT, done_at REAL)")
        self._recover()

    def _recover(self) -> None:
        # An analysis being saved, or a file being added to one (a SEG or SR encoded after
        # the answer), the process was killed in: all of it is in staging (one listing, not
        # one per stored analysis); nothing writes yet at start-up.
        for leftover in self.staging.iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        indexed = {row[0] for row in self._db.execute("SELECT id FROM analyses")}
        for folder in self.analyses.iterdir():
            if folder.name not in indexed and (folder / FILES["report"]).exists():
                # Stored but not indexed (a crash between the two): its push was not
                # queued either, so it is queued now with the index row.
                identity = folder / FILES["identity"]
                self._index(json.loads((folder / FILES["report"]).read_text()),
                            json.loads(identity.read_text()) if identity.exists() else {},
                            self.push_to)

    def _index(self, report: dict, identity: dict, push_to: str | None = None,
               synced: bool = True) -> None:
        """The analysis' index row (and its queued push) in one transaction.

        ``synced=False`` commits without waiting for the disk (synchronous=NORMAL: in WAL
        mode the index stays consistent, and the commit is made durable by the next
        checkpoint or FULL commit). Only for a folder already durable in place: a power cut
        that loses the row leaves the folder, which :meth:`_recover` indexes again at start,
        its push queued with it.
        """
        with self._lock:
            if not synced:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._insert(report, identity, push_to)
            finally:
                if not synced:
                    self._db.execute("PRAGMA synchronous=FULL")

    def _insert(self, report: dict, identity: dict, push_to: str | None) -> None:
        with transaction(self._db):
            self._db.execute("INSERT OR REPLACE INTO analyses (id, created_at, pipeline, "
                             "series_instance_uid, scar_percent, verdict, fingerprint, "
                             f"{', '.join(IDENTITY)}) VALUES (?, ?, ?, ?, ?, ?, ?, "
                             f"{', '.join('?' * len(IDENTITY))})",
                             (report["id"], report["created_at"], report["pipeline"],
                              report["series_instance_uid"], report["scar_percent"],
                              (report.get("quality") or {}).get("verdict"),
                              report.get("input_fingerprint"),
                              *(identity.get(k) for k in IDENTITY)))
            if push_to:
                self._db.execute("INSERT OR IGNORE INTO pushes (id, destination, status, "
                                 "next_attempt_at) VALUES (?, ?, 'pending', 0)",
                                 (report["id"], push_to))

    def save(self, report: dict, files: dict[str, bytes], push_to: str | None = None,
             spooled: int = 0) -> None:
        """Write every file of one analysis, then make it visible (and queue its push) at once.

        InsufficientStorage when the disk cannot take it (checked first, so most refusals
        write nothing): then nothing of it is left, in staging, the folder or the index.
        ``spooled``: the bytes its upload holds on this disk until answered (:meth:`Space.check`).
        """
        analysis_id = report["id"]
        tmp = self.staging / analysis_id
        payloads = {FILES["report"]: json.dumps(report).encode()} | {
            FILES[key]: data for key, data in files.items()}
        needed = int(sum(len(data) for data in payloads.values()) * (1 + ENCODED_SHARE))
        self.space.check(needed, spooled)
        placed = False
        try:
            with self.space.guard(needed):
                tmp.mkdir()
                write_synced({tmp / name: data for name, data in payloads.items()})
                os.replace(tmp, self.analyses / analysis_id)
                placed = True
                fsync_dir(self.analyses)
                identity = json.loads(files["identity"]) if "identity" in files else {}
                # The folder is durable in place (fsynced, renamed, its parent fsynced): the
                # row can wait for the disk (issue 54; about one fsync less an answer).
                self._index(report, identity, push_to, synced=False)
        except BaseException:
            # Not answered: a folder left in place would be indexed at the next start.
            if placed:
                os.replace(self.analyses / analysis_id, tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _write_into(self, analysis_id: str, files: dict[str, bytes]) -> bool:
        """Add files to a stored analysis, each whole or not at all, renamed in the given
        order (made durable together: :func:`write_all_atomic`); False when the analysis is
        gone (deleted while it was encoded): its folder is not made again."""
        try:
            with self.space.guard(sum(len(data) for data in files.values())):
                write_all_atomic(self.analyses / analysis_id,
                                 {FILES[kind]: data for kind, data in files.items()},
                                 make_folder=False, staging=self.staging)
        except FileNotFoundError:
            return False
        return True

    def save_encoded(self, analysis_id: str, files: dict[str, bytes]) -> bool:
        """The SEG and SR of a stored analysis (both there mark the encoding done);
        InsufficientStorage when the disk is full (then neither is written)."""
        written = self._write_into(analysis_id, {kind: files[kind] for kind in ENCODED})
        # A bug's error of an earlier try (a restart tries those again) is now out of date.
        (self.analyses / analysis_id / FILES["encoding_error"]).unlink(missing_ok=True)
        return written

    def save_spread(self, analysis_id: str, data: bytes) -> bool:
        """The viewer's layer of where the networks disagree, made when first asked for."""
        return self._write_into(analysis_id, {"spread": data})

    def save_encoding_error(self, analysis_id: str, body: dict) -> bool:
        """Why no SEG and SR can be made of a stored analysis (the input's doing)."""
        return self._write_into(analysis_id, {"encoding_error": json.dumps(body).encode()})

    @staticmethod
    def _encoding_settled(folder: Path, retry_bugs: bool = False) -> bool:
        """The SEG and SR are written or no SEG and SR can be made; with ``retry_bugs``,
        one given up on for a bug (status 500) is not settled (a start tries it again: the
        bug may be mended). Both are looked for: their renames are made durable by one
        fsync of the folder, so a power cut may in principle keep the SR's and not the
        SEG's (the start then encodes them again, to the same bytes)."""
        if all((folder / FILES[kind]).exists() for kind in ENCODED):
            return True
        error = folder / FILES["encoding_error"]
        if not error.exists():
            return False
        return not retry_bugs or json.loads(error.read_text()).get("status", 422) < 500

    def encoding_state(self, analysis_id: str) -> str | dict:
        """"done", "pending", or the error body saying why there is no SEG and SR (with
        its HTTP "status": 422 the input's doing, 500 a bug)."""
        folder = self.path(analysis_id, "report").parent
        if not self._encoding_settled(folder):
            return "pending"
        if (folder / FILES["sr"]).exists():  # settled with an SR: the SEG is there too
            return "done"
        return {"status": 422} | json.loads((folder / FILES["encoding_error"]).read_text())

    def encoder_inputs(self, analysis_id: str) -> tuple[dict, dict[str, bytes]] | None:
        """The report and the stored files the SEG and SR are made of; None when the
        analysis is gone or needs no encoding."""
        folder = self.analyses / analysis_id
        try:
            if self._encoding_settled(folder, retry_bugs=True):
                return None
            report = json.loads((folder / FILES["report"]).read_text())
            return report, {kind: (folder / FILES[kind]).read_bytes()
                            for kind in ENCODER_INPUTS}
        except FileNotFoundError:
            return None

    def unencoded(self) -> list[str]:
        """Analyses stored before their SEG and SR were (a crash after the answer), oldest
        first; analyses stored before encoders' inputs were kept are not among them."""
        with self._lock:
            ids = [row[0] for row in self._db.execute(
                "SELECT id FROM analyses ORDER BY created_at")]
        return [i for i in ids if (self.analyses / i / FILES["sources"]).exists()
                and not self._encoding_settled(self.analyses / i, retry_bugs=True)]

    def has(self, analysis_id: str, kind: str) -> bool:
        return (self.analyses / analysis_id / FILES[kind]).exists()

    def path(self, analysis_id: str, kind: str) -> Path:
        if not ID_PATTERN.match(analysis_id):
            raise NotFound(f"no analysis {analysis_id!r}")
        with self._lock:
            row = self._db.execute("SELECT 1 FROM analyses WHERE id = ?",
                                   (analysis_id,)).fetchone()
        path = self.analyses / analysis_id / FILES[kind]
        if row is None or not path.exists():
            raise NotFound(f"no analysis {analysis_id!r}")
        return path

    def delete(self, analysis_id: str) -> dict:
        """Remove one analysis (report, SEG, SR, arrays, queued push); returns its report.

        The index rows go first, in one transaction, so the analysis disappears at once;
        its folder is then moved out of sight, the move made durable before the answer
        (start-up indexes again a folder it finds without its row: a power cut that undid
        the move would bring a deleted analysis back), and removed. A crash in between
        leaves a folder in staging, which the next start removes.
        """
        report = json.loads(self.path(analysis_id, "report").read_text())
        with self._lock:
            with transaction(self._db):
                self._db.execute("DELETE FROM analyses WHERE id = ?", (analysis_id,))
                self._db.execute("DELETE FROM pushes WHERE id = ?", (analysis_id,))
        doomed = self.staging / f"deleted-{analysis_id}"
        os.replace(self.analyses / analysis_id, doomed)
        fsync_dir(self.analyses)
        shutil.rmtree(doomed, ignore_errors=True)
        return report

    def find_fingerprint(self, fingerprint: str) -> str | None:
        """The analysis already made of exactly these instances with these models, if any."""
        with self._lock:
            row = self._db.execute("SELECT id FROM analyses WHERE fingerprint = ? ORDER BY "
                                   "created_at DESC LIMIT 1", (fingerprint,)).fetchone()
        return None if row is None else row[0]

    def older_than(self, cutoff_iso: str) -> list[str]:
        """Ids of the analyses created before ``cutoff_iso`` (ISO 8601, UTC)."""
        with self._lock:
            return [row[0] for row in self._db.execute(
                "SELECT id FROM analyses WHERE created_at < ?", (cutoff_iso,))]

    def report(self, analysis_id: str) -> dict:
        """The stored report, with the store-back state as it is now."""
        report = json.loads(self.path(analysis_id, "report").read_text())
        push = self.push_state(analysis_id)
        if push is not None:
            report["store_back"] = push
        return report

    # -- store-back queue ---------------------------------------------------------

    _PUSH_FIELDS = ("destination", "status", "attempts", "next_attempt_at", "last_attempt_at",
                    "last_error", "done_at")

    def push_state(self, analysis_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(self._PUSH_FIELDS)} FROM pushes "
                                   "WHERE id = ?", (analysis_id,)).fetchone()
        return None if row is None else dict(zip(self._PUSH_FIELDS, row, strict=True))

    def pushes_due(self, now: float, limit: int = 8) -> list[tuple[str, str]]:
        """(analysis id, destination) of pushes not done whose next attempt is due."""
        with self._lock:
            return self._db.execute(
                "SELECT id, destination FROM pushes WHERE status != 'done' AND "
                "next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?", (now, limit)).fetchall()

    def push_succeeded(self, analysis_id: str, now: float) -> None:
        with self._lock, self.space.guard():
            self._db.execute("UPDATE pushes SET status = 'done', attempts = attempts + 1, "
                             "last_attempt_at = ?, done_at = ?, last_error = NULL WHERE id = ?",
                             (now, now, analysis_id))

    def push_failed(self, analysis_id: str, now: float, error: str, first_retry_s: float,
                    max_retry_s: float) -> None:
        """Record the failure and schedule the next attempt (exponential back-off, capped)."""
        with self._lock, self.space.guard():
            (attempts,) = self._db.execute("SELECT attempts FROM pushes WHERE id = ?",
                                           (analysis_id,)).fetchone()
            delay = min(max_retry_s, first_retry_s * 2.0 ** attempts)
            self._db.execute("UPDATE pushes SET status = 'retrying', attempts = ?, "
                             "last_attempt_at = ?, next_attempt_at = ?, last_error = ? "
                             "WHERE id = ?",
                             (attempts + 1, now, now + delay, error[:2000], analysis_id))

    def retry_push_now(self, analysis_id: str) -> bool:
        with self._lock:
            cursor = self._db.execute("UPDATE pushes SET next_attempt_at = 0 WHERE id = ? AND "
                                      "status != 'done'", (analysis_id,))
        return cursor.rowcount > 0

    def recent(self, limit: int = 50, series_instance_uid: str | None = None) -> list[dict]:
        """Newest first; optionally only the analyses of one series."""
        where, args = ("WHERE series_instance_uid = ?", [series_instance_uid]) \
            if series_instance_uid else ("", [])
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(RECENT)} FROM analyses {where} "
                "ORDER BY created_at DESC LIMIT ?", (*args, limit)).fetchall()
        return [dict(zip(RECENT, row, strict=True)) for row in rows]

    def identity(self, analysis_id: str) -> dict:
        """Patient name and ID, study date and series description of one analysis ({} for
        one stored before they were indexed)."""
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(IDENTITY)} FROM analyses WHERE id = ?",
                                   (analysis_id,)).fetchone()
        if row is None:
            raise NotFound(f"no analysis {analysis_id}")
        return {k: v for k, v in zip(IDENTITY, row, strict=True) if v is not None}

    def close(self) -> None:
        self._db.close()
