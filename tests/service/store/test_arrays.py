"""An analysis' stored arrays with its masks as bits (issue 54): the same arrays back, an
eighth of the bytes for the masks, and the layout stored before still read, encoded to the
same SEG and SR and drawn the same."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from service.encoding import encode_stored
from service.store import arrays
from tests.conftest import multipart, series_files


def _old_layout(stored: dict[str, np.ndarray]) -> bytes:
    """The file as stored before: one bool a pixel for each mask."""
    buffer = io.BytesIO()
    np.savez(buffer, **stored)
    return buffer.getvalue()


def test_masks_come_back_as_stored_from_an_eighth_of_the_bytes() -> None:
    rng = np.random.default_rng(5)
    images = rng.normal(size=(5, 37, 41)).astype(np.float32)  # 7585 pixels: not a multiple of 8
    masks = {name: rng.random(images.shape) > p for name, p in
             (("myocardium", 0.7), ("scar", 0.9), ("mvo", 1.0), ("crop_ring", 0.5))}
    data = arrays.dump(images, **masks)
    back = arrays.load(data)
    assert sorted(back) == sorted(["images", *masks])
    assert back["images"].dtype == np.float32 and np.array_equal(back["images"], images)
    for name, mask in masks.items():
        assert back[name].dtype == bool and np.array_equal(back[name], mask), name
    masks_bytes = len(data) - len(arrays.dump(images))
    assert masks_bytes < 4 * (images.size / 8 + 400)  # a bool a pixel would be 4 x 7585
    assert sorted(arrays.load(data, ("scar", "images"))) == ["images", "scar"]
    assert sorted(arrays.load(_old_layout({"images": images} | masks), ("scar",))) == ["scar"]
    with pytest.raises(ValueError, match="shape"):
        arrays.dump(images, scar=masks["scar"][:2])


def _stored_type(data: bytes) -> np.dtype:
    with np.load(io.BytesIO(data)) as stored:
        return stored["images"].dtype


@pytest.mark.parametrize(("values", "stored"), [
    (np.arange(0, 250), np.uint8),
    (np.arange(0, 4096), np.uint16),  # 12-bit MR, as most scanners store it
    (np.arange(-1024, 3072), np.int16),  # a negative rescale intercept
    (np.arange(0, 70000), np.float32),  # beyond 16 bits
    (np.arange(0, 4096) * 0.5, np.float32),  # a fractional rescale slope
    (np.r_[np.arange(0, 4096), np.nan], np.float32),
])
def test_images_of_whole_numbers_are_stored_narrow_and_come_back_the_same(values,
                                                                           stored) -> None:
    rng = np.random.default_rng(2)
    images = rng.choice(np.asarray(values, np.float32), size=(3, 29, 31))
    images.flat[:2] = [values.min(), values.max()]  # both ends of the range are there
    masks = {"scar": rng.random(images.shape) > 0.8}
    data = arrays.dump(images, **masks)
    assert _stored_type(data) == stored
    back = arrays.load(data)
    assert back["images"].dtype == np.float32
    assert np.array_equal(back["images"], images, equal_nan=True)
    assert np.array_equal(back["scar"], masks["scar"])
    if stored != np.float32:
        assert len(data) < images.nbytes * np.dtype(stored).itemsize / 4 + 2000


def test_an_analysis_stored_in_the_old_layout_encodes_and_draws_the_same(
        make_client, series_dirs, tmp_path) -> None:
    with make_client() as client:
        r = client.post("/v1/analyses", files=multipart(series_files(series_dirs[0])))
        assert r.status_code == 201, r.text
        analysis_id = r.json()["id"]
        seg = client.get(f"/v1/analyses/{analysis_id}/seg").content
        sr = client.get(f"/v1/analyses/{analysis_id}/sr").content
        overlay = client.get(f"/v1/analyses/{analysis_id}/overlay/3.png").content
        folder = tmp_path / "data" / "analyses" / analysis_id
        stored = arrays.load(folder / "arrays.npz")
        assert {"images", "myocardium", "scar", "mvo", "crop_ring"} == set(stored)
        (folder / "arrays.npz").write_bytes(_old_layout(stored))  # as 0.3.x-0.4 stored it
        report = json.loads((folder / "report.json").read_text())
        again = encode_stored(report, {"arrays": (folder / "arrays.npz").read_bytes(),
                                       "sources": (folder / "sources.zip").read_bytes()})
        assert again == {"seg": seg, "sr": sr}
        assert client.get(f"/v1/analyses/{analysis_id}/overlay/3.png").content == overlay
