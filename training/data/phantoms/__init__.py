"""Synthetic dark-blood LGE short-axis phantoms with ground truth.

There is no patient data in this project; these phantoms are what the models
are trained and tested on. See ``docs/phantoms.md`` for the file format.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom

from service.pipeline.intensity import to_float
from training.data.phantoms.dicom import build_datasets, series_id, write_series
from training.data.phantoms.render import RenderedSeries, render
from training.data.phantoms.spec import OBSTRUCTION_PROBABILITY, PhantomSpec, sample_spec

__all__ = [
    "PhantomSpec", "RenderedSeries", "build_datasets", "generate_one", "load_truth",
    "load_series", "render", "sample_spec", "series_id", "write_series",
]


def generate_one(seed: int, index: int, out_dir: Path,
                 obstruction_probability: float = OBSTRUCTION_PROBABILITY) -> dict:
    """Render and write series ``index`` of data set ``seed``; returns its meta.json."""
    spec = sample_spec(seed, index, obstruction_probability)
    series_dir = write_series(spec, render(spec), Path(out_dir))
    return json.loads((series_dir / "meta.json").read_text())


def load_truth(series_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """Ground truth of one written series as ``{sop_instance_uid: {"myocardium", "scar", ...}}``.

    ``cavity`` (the LV blood pool) is there for series written since it was saved.
    """
    with np.load(Path(series_dir) / "truth.npz") as data:
        uids = [str(u) for u in data["sop_instance_uids"]]
        keys = [k for k in ("myocardium", "scar", "mvo", "cavity") if k in data.files]
        arrays = {k: data[k] for k in keys}
        return {uid: {k: arrays[k][i] for k in keys} for i, uid in enumerate(uids)}


def load_series(series_dir: Path) -> tuple[list[pydicom.Dataset], list[np.ndarray]]:
    """Datasets and physical-value images of a written series, in truth (base-to-apex) order.

    For tools and tests that know the truth; the service orders slices by
    geometry instead.
    """
    series_dir = Path(series_dir)
    with np.load(series_dir / "truth.npz") as data:
        order = {str(u): k for k, u in enumerate(data["sop_instance_uids"])}
    datasets = sorted((pydicom.dcmread(p) for p in (series_dir / "dicom").glob("*.dcm")),
                      key=lambda d: order[d.SOPInstanceUID])
    images = [to_float(d.pixel_array, float(d.get("RescaleSlope", 1)),
                       float(d.get("RescaleIntercept", 0))) for d in datasets]
    return datasets, images
