"""Export a Keras network to ONNX with tf2onnx (opset 17, dynamic batch axis).

The graph is traced from a ``tf.function`` with an explicit input signature,
so the ONNX input keeps the name ``image`` and a symbolic batch dimension;
``onnx.checker`` validates the result before it is written.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import keras
import onnx
import tensorflow as tf
import tf2onnx

OPSET = 17


def export_onnx(model: keras.Model, path: Path, opset: int = OPSET,
                input_hw: tuple[int, int] | None = None) -> str:
    """Write ``model`` as ONNX at ``path``; returns the file's sha256.

    ``input_hw`` fixes the height and width of a network built with free
    spatial dimensions (trained on random crops, served on whole inputs).
    """
    _, height, width, channels = model.input_shape
    if input_hw is not None:
        height, width = input_hw
    spec = (tf.TensorSpec((None, height, width, channels), tf.float32, name="image"),)

    @tf.function(input_signature=spec)
    def serve(image):
        return {"probabilities": model(image, training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = proto.SerializeToString()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()
