"""Static int8 quantisation of an exported network (onnxruntime QDQ), on validation inputs.

onnxruntime's int8 kernels use this CPU's AVX-512 VNNI and AMX units. The
graph is first pre-processed (shape inference, fusions), then every
convolution gets QuantizeLinear/DequantizeLinear pairs: weights int8 per
output channel (symmetric), activations uint8, their ranges taken from the
network's own validation inputs (cut by the service's preprocessing, never
a test set's). The float32 file stays the reference: the evaluation runs
both and the release may default to int8 only where it holds accuracy.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from service.pipeline.postprocess import clean_myocardium
from service.pipeline.preprocess import crop_transforms, model_inputs
from service.pipeline.segment import myocardium_probability

# Validation rows used for the activation ranges (a random subset, drawn with a fixed seed).
CALIBRATION_ROWS = 256
CALIBRATION_BATCH = 16
# EMIDEC train cases whose inputs join the phantoms' in a calibration (their ranges are
# real LGE's; never a test case).
EMIDEC_CALIBRATION_CASES = 20


class _Batches(CalibrationDataReader):
    def __init__(self, x: np.ndarray, input_name: str) -> None:
        self._batches = iter([{input_name: np.ascontiguousarray(x[i:i + CALIBRATION_BATCH],
                                                                np.float32)}
                              for i in range(0, len(x), CALIBRATION_BATCH)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def calibration_rows(x: np.ndarray, rows: int = CALIBRATION_ROWS, seed: int = 0) -> np.ndarray:
    """A seeded random subset of a network's validation inputs."""
    if len(x) <= rows:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), rows, replace=False))]


def last_convolutions(path: Path, count: int) -> list[str]:
    """The names of a graph's last ``count`` Conv nodes (ONNX nodes are in topological
    order): the layers nearest the probabilities, which the study leaves in float32."""
    if not count:
        return []
    import onnx

    convs = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
    return convs[len(convs) - count:]


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: np.ndarray,
                  input_name: str = "image", float_last_convs: int = 0,
                  method: str = "minmax") -> str:
    """Write the int8 QDQ copy of ``fp32_path``; returns its sha256.

    ``float_last_convs``: that many final convolutions stay float32; ``method``:
    ``minmax`` or ``percentile`` (99.999th) activation ranges.
    """
    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(int8_path), _Batches(calibration, input_name),
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, per_channel=True,
            calibrate_method=methods[method],
            nodes_to_exclude=last_convolutions(prepared, float_last_convs),
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    return hashlib.sha256(int8_path.read_bytes()).hexdigest()


def int8_copy(fp32_file: Path, inputs: np.ndarray) -> Path:
    """The int8 file beside the float32 one, calibrated on a seeded subset of ``inputs``
    (validation inputs, never a test set's); one newer than the float32 file is kept, so a
    resumed release quantises nothing twice."""
    fp32_file = Path(fp32_file)
    path = fp32_file.with_name(fp32_file.stem + "-int8.onnx")
    if not (path.exists() and path.stat().st_mtime > fp32_file.stat().st_mtime):
        quantize_int8(fp32_file, path, calibration_rows(inputs))
    return path


def calibration_inputs(sources: Sequence, networks: dict) -> dict[str, np.ndarray]:
    """Each U-Net's inputs on these series (training sources: ``read()`` gives images and
    spacing), cut as the service cuts them (the scar U-Net's box from the myocardium
    U-Net's ring); a seeded subset of CALIBRATION_ROWS rows each, for each network that
    got any."""
    myo_net, scar_net = networks["myocardium_unet"], networks["scar_unet"]
    rows = {"myocardium_unet": [], "scar_unet": []}
    for source in sources:
        series = source.read()
        batch, _ = model_inputs(series.images, series.spacing, myo_net.spec)
        rows["myocardium_unet"].append(batch)
        ring = clean_myocardium(myocardium_probability(series.images, series.spacing,
                                                       myo_net))
        transforms = crop_transforms(series.images, series.spacing, scar_net.spec, ring)
        if transforms is not None:
            batch, _ = model_inputs(series.images, series.spacing, scar_net.spec, transforms,
                                    ring)
            rows["scar_unet"].append(batch)
    # A network with no inputs (no ring on any series: untrained networks) gets none.
    return {task: calibration_rows(np.concatenate(parts)) for task, parts in rows.items()
            if parts}


def quantised_members(members: dict[str, list[Path]], calibration: dict[str, np.ndarray],
                      tasks: Sequence[str]) -> dict[str, list[Path]]:
    """The :func:`int8_copy` of every member of an ensemble (``tasks``' only), all of a
    network's members on the same calibration rows. A network without calibration rows gets
    no copies (it runs in float32)."""
    return {task: [int8_copy(fp32, calibration[task]) for fp32 in members[task]]
            for task in tasks if task in members and task in calibration}
