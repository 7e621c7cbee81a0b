"""Archives as they come, in the batch: duplicated instances decided by the service's one rule
(service.dicom.instances), with file-level rows naming the paths (issue 46)."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from service.batch.discover import discover
from tests.service.batch.test_batch import _reports, _run
from tests.service.dicom.test_instances import edited, truncated, uid_of


@pytest.mark.slow
def test_a_cut_copy_is_a_file_row_and_different_copies_refuse_the_series(tmp_path,
                                                                         series_dirs) -> None:
    source = tmp_path / "archive"
    whole = source / "patient0" / "exam"
    shutil.copytree(series_dirs[0] / "dicom", whole)
    conflicted = source / "patient1" / "exam"
    shutil.copytree(series_dirs[1] / "dicom", conflicted)
    # A re-send cut short, in a folder read before the whole series; an edited copy after.
    cut_from = sorted(whole.glob("*.dcm"))[2]
    (source / "patient0" / "a-resend").mkdir()
    cut = source / "patient0" / "a-resend" / cut_from.name
    cut.write_bytes(truncated(cut_from.read_bytes()))
    edited_from = sorted(conflicted.glob("*.dcm"))[-1]
    (source / "patient1" / "z-edited").mkdir()
    changed = source / "patient1" / "z-edited" / edited_from.name
    changed.write_bytes(edited(edited_from.read_bytes()))
    assert {len(s.files) for s in discover(source).series} == \
        {len(list(whole.glob("*.dcm"))) + 1, len(list(conflicted.glob("*.dcm"))) + 1}

    out = tmp_path / "out"
    summary = _run(source, out, tmp_path)
    assert "1 analysed, 1 refused, 0 failed" in summary, summary

    results = pq.read_table(out / "results.parquet").to_pylist()
    assert len(results) == 1
    report = json.loads(next(iter(_reports(out).values())).read_text())["report"]
    assert len(report["slices"]) == len(list(whole.glob("*.dcm")))
    assert any(str(cut) in w and "complete copy was used" in w for w in report["warnings"])

    failures = pq.read_table(out / "failures.parquet").to_pylist()
    by_code = {r["code"]: r for r in failures}
    assert set(by_code) == {"corrupt_dicom", "conflicting_instances"}, failures
    assert by_code["corrupt_dicom"]["first_file"] == str(cut)
    assert by_code["corrupt_dicom"]["series_uid"] == ""  # a file's row, not the series'
    conflict = by_code["conflicting_instances"]
    assert conflict["status"] == 422
    assert uid_of(edited_from.read_bytes()) in conflict["message"]
    assert str(changed) in conflict["message"] and str(edited_from) in conflict["message"]
