"""The release's steps after the legs, kept in the repository as each finishes.

A release spans sittings, and a sitting's working folder does not outlive it (a fresh
clone has none), so what the out-of-fold choices and the interval's calibration computed
is kept as the legs are: numbers only (JSON, never images or network outputs), committed,
under the fingerprint of what they were computed from (every leg's ONNX file, the shared
networks, the options). A later run takes a kept step whose fingerprint matches and
computes again one whose inputs changed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from service.pipeline.registry import sha256_of
from training import legs as legs_

STEP_SUFFIX = ".json"


def steps_root(legs_root: Path) -> Path:
    """Where a release's steps are kept: beside its legs (releases/round4/steps)."""
    return Path(legs_root).parent / "steps"


def _plain(value):
    """The value as JSON reads it back (tuples as lists, numpy scalars as floats), so a
    fingerprint compares equal to the one kept."""
    return json.loads(json.dumps(value, default=float))


@dataclass(frozen=True)
class Step:
    name: str
    folder: Path
    fingerprint: Mapping
    commit: bool = False

    @property
    def path(self) -> Path:
        return Path(self.folder) / f"{self.name}{STEP_SUFFIX}"

    def load(self) -> dict | None:
        """The kept value, or None where none is kept or it was computed from other inputs."""
        if not self.path.exists():
            return None
        kept = json.loads(self.path.read_text())
        if kept.get("fingerprint") != _plain(self.fingerprint):
            return None
        return kept["value"]

    def keep(self, value: Mapping, summary: str) -> bool:
        """Write the value (atomically) and, with ``commit``, commit the steps' folder; False
        where the commit failed (the file stays, and the next run finds it)."""
        folder = Path(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"fingerprint": _plain(self.fingerprint), "value": value},
                                  default=float) + "\n")
        tmp.replace(self.path)
        if not self.commit:
            return True
        return legs_.commit_folder(folder, f"Release step {self.name}: {summary}")


def fingerprint(fold_records: Mapping[int, Mapping[str, dict]], shared_files: Mapping[str, Path],
                **options) -> dict:
    """What a release's steps are computed from: each fold network's ONNX file (its sha256,
    from its kept leg), the shared networks' files it uses, and the options that change the
    series or the choices."""
    return {"legs": {f"fold{fold}-{task}": record["files"][legs_.ONNX_FILE]
                     for fold, tasks in sorted(fold_records.items())
                     for task, record in sorted(tasks.items())},
            "shared": {task: sha256_of(Path(path))
                       for task, path in sorted(shared_files.items())},
            "options": options}
