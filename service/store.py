"""Result store: one folder per analysis plus an SQLite index (the embedded default).

An analysis is written to a temporary folder, fsynced and renamed into
place, then indexed in one SQLite transaction; only then is it answered.
A crash leaves either no trace or a complete folder, and folders missing
from the index (crash between rename and insert) are re-indexed at start.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import threading
from pathlib import Path

from .errors import NotFound

ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
FILES = {"report": "report.json", "seg": "seg.dcm", "sr": "sr.dcm", "arrays": "arrays.npz"}


class ResultStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
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
                         "series_instance_uid TEXT NOT NULL, scar_percent REAL NOT NULL)")
        self._recover()

    def _recover(self) -> None:
        for leftover in self.staging.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
        indexed = {row[0] for row in self._db.execute("SELECT id FROM analyses")}
        for folder in self.analyses.iterdir():
            if folder.name not in indexed and (folder / FILES["report"]).exists():
                self._index(json.loads((folder / FILES["report"]).read_text()))

    def _index(self, report: dict) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO analyses VALUES (?, ?, ?, ?, ?)",
                             (report["id"], report["created_at"], report["pipeline"],
                              report["series_instance_uid"], report["scar_percent"]))
            self._db.execute("COMMIT")

    def save(self, report: dict, files: dict[str, bytes]) -> None:
        """Write every file of one analysis, then make it visible atomically."""
        analysis_id = report["id"]
        tmp = self.staging / analysis_id
        tmp.mkdir()
        payloads = {FILES["report"]: json.dumps(report).encode()} | {
            FILES[key]: data for key, data in files.items()}
        for name, data in payloads.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.analyses / analysis_id)
        dir_fd = os.open(self.analyses, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._index(report)

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

    def report(self, analysis_id: str) -> dict:
        return json.loads(self.path(analysis_id, "report").read_text())

    def recent(self, limit: int = 50) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, created_at, pipeline, series_instance_uid, scar_percent FROM "
                "analyses ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        keys = ("id", "created_at", "pipeline", "series_instance_uid", "scar_percent")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def close(self) -> None:
        self._db.close()
