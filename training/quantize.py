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

# Validation rows used for the activation ranges (a random subset, drawn with a fixed seed).
CALIBRATION_ROWS = 256
CALIBRATION_BATCH = 16


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
