"""One copy of each instance, decided per instance whatever the order of the files (issue 46)."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pydicom
import pytest

from service.dicom.ingest import Blob
from service.dicom.instances import one_copy_each
from service.errors import ConflictingInstances, InputError
from tests.conftest import to_bytes

LIMIT = 10**9


def edited(data: bytes) -> bytes:
    """The same instance (same SOP Instance UID) with a quarter of its image blanked."""
    ds = pydicom.dcmread(io.BytesIO(data))
    pixels = ds.pixel_array.copy()
    pixels[: pixels.shape[0] // 2, : pixels.shape[1] // 2] = 0
    ds.PixelData = pixels.tobytes()
    return to_bytes(ds)


def truncated(data: bytes) -> bytes:
    """The first third of the file: a copy cut short by a full disk."""
    return data[: len(data) // 3]


def blobs_of(tmp_path: Path, files: list[tuple[str, bytes]]) -> list[Blob]:
    blobs = []
    for k, (name, data) in enumerate(files):
        path = tmp_path / f"{k:03d}"
        path.write_bytes(data)
        blobs.append(Blob(name, path))
    return blobs


@pytest.fixture(scope="module")
def three(series_dirs) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted((series_dirs[0] / "dicom").glob("*.dcm"))[:3]]


def uid_of(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def test_identical_copies_are_one_instance_with_a_warning(tmp_path, three) -> None:
    got = one_copy_each(blobs_of(tmp_path, [*three, ("again.dcm", three[1][1])]), LIMIT)
    assert sorted(str(d.SOPInstanceUID) for d in got.datasets) == sorted(uid_of(d)
                                                                         for _, d in three)
    assert got.warnings == [f"instance {uid_of(three[1][1])} was sent more than once; the copy "
                            "was ignored"]
    assert got.bad_copies == []


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_a_truncated_copy_beside_a_whole_one_is_a_warning_whatever_the_order(tmp_path, three,
                                                                            order) -> None:
    files = [*three, ("cut.dcm", truncated(three[0][1]))]
    got = one_copy_each(blobs_of(tmp_path, [files[k] for k in order]), LIMIT)
    assert len(got.datasets) == 3
    used = next(d for d in got.datasets if str(d.SOPInstanceUID) == uid_of(three[0][1]))
    whole = pydicom.dcmread(io.BytesIO(three[0][1]))
    assert np.array_equal(used.pixel_array, whole.pixel_array)
    assert [c.blob.name for c in got.bad_copies] == ["cut.dcm"]
    assert got.bad_copies[0].code == "corrupt_dicom"
    assert any("cut.dcm" in w and "complete copy was used" in w for w in got.warnings)


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_two_different_images_of_one_instance_refuse_the_series(tmp_path, three, order) -> None:
    files = [*three, ("edited.dcm", edited(three[2][1]))]
    with pytest.raises(ConflictingInstances) as raised:
        one_copy_each(blobs_of(tmp_path, [files[k] for k in order]), LIMIT)
    error = raised.value
    assert error.code == "conflicting_instances" and error.status_code == 422
    assert uid_of(three[2][1]) in error.message
    assert "edited.dcm" in error.message and three[2][0] in error.message


def test_an_instance_with_only_a_broken_copy_is_refused_naming_the_file(tmp_path, three) -> None:
    files = [three[0], three[1], ("cut.dcm", truncated(three[2][1]))]
    with pytest.raises(InputError) as raised:
        one_copy_each(blobs_of(tmp_path, files), LIMIT)
    assert raised.value.code == "corrupt_dicom" and raised.value.message.startswith("cut.dcm")


def test_the_choice_among_equal_copies_does_not_depend_on_the_order(tmp_path, three) -> None:
    # Same pixels, another header (an edited description): one is used, always the same one.
    ds = pydicom.dcmread(io.BytesIO(three[0][1]))
    ds.SeriesDescription = "re-exported"
    files = [three[0], ("re-export.dcm", to_bytes(ds))]
    chosen = {str(one_copy_each(blobs_of(tmp_path / str(k), [files[i] for i in order]),
                                LIMIT).datasets[0].SeriesDescription)
              for k, order in enumerate(itertools.permutations(range(2)))
              if (tmp_path / str(k)).mkdir() is None}
    assert len(chosen) == 1
