"""PReLU fusion at shipping: fewer nodes, the same answers, nothing else touched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from training.legs import LEGS_ROOT
from training.onnx_graph import fuse_prelus, fused_copy, largest_difference

SLOPE = np.array([0.25, -0.5, 2.0], np.float32).reshape(1, 1, 3)


def _exported_prelu(extra_use_of_negation: bool = False) -> onnx.ModelProto:
    """``relu(x) + (-a) * relu(-x)`` as tf2onnx writes a Keras PReLU, then a Sigmoid."""
    nodes = [helper.make_node("Relu", ["x"], ["pos"]),
             helper.make_node("Neg", ["x"], ["negx"]),
             helper.make_node("Relu", ["negx"], ["relu_neg"]),
             helper.make_node("Mul", ["relu_neg", "minus_a"], ["scaled"]),
             helper.make_node("Add", ["pos", "scaled"], ["prelu"]),
             helper.make_node("Sigmoid", ["prelu"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 3])]
    if extra_use_of_negation:
        nodes.append(helper.make_node("Identity", ["negx"], ["negx_too"]))
        outputs.append(helper.make_tensor_value_info("negx_too", TensorProto.FLOAT,
                                                     [None, 4, 3]))
    graph = helper.make_graph(
        nodes, "prelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 3])],
        outputs, [numpy_helper.from_array(-SLOPE, "minus_a")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_the_five_nodes_become_one_prelu_with_the_same_answers(tmp_path: Path) -> None:
    source = tmp_path / "exported.onnx"
    onnx.save(_exported_prelu(), source)
    target = tmp_path / "fused.onnx"
    assert fused_copy(source, target) == 1
    fused = onnx.load(target)
    assert [n.op_type for n in fused.graph.node] == ["PRelu", "Sigmoid"]
    # Only the slope itself is left: no unread initializer for onnxruntime to warn about.
    assert [i.name for i in fused.graph.initializer] == ["minus_a_prelu_slope"]
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype(np.float32)
    answer = ort.InferenceSession(str(target)).run(None, {"x": x})[0]
    expected = 1 / (1 + np.exp(-np.where(x >= 0, x, SLOPE * x)))
    np.testing.assert_allclose(answer, expected, rtol=1e-6)
    assert largest_difference(source, target) == 0.0


def test_a_negation_used_elsewhere_is_left_as_it_is(tmp_path: Path) -> None:
    model = _exported_prelu(extra_use_of_negation=True)
    nodes = len(model.graph.node)
    assert fuse_prelus(model) == 0 and len(model.graph.node) == nodes
    source, target = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(_exported_prelu(extra_use_of_negation=True), source)
    assert fused_copy(source, target) == 0
    assert target.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("task", ["enet_p2", "enet_p1"])
def test_a_kept_enet_fuses_every_prelu_and_answers_as_exported(tmp_path: Path,
                                                                task: str) -> None:
    source = LEGS_ROOT / f"fold0-{task}-s3" / "model.onnx"
    before = len(onnx.load(source).graph.node)
    target = tmp_path / "fused.onnx"
    fused = fused_copy(source, target)
    after = onnx.load(target)
    assert fused > 50 and len(after.graph.node) == before - 4 * fused
    assert not any(n.op_type == "Neg" for n in after.graph.node)
    read = {name for node in after.graph.node for name in node.input}
    assert all(i.name in read for i in after.graph.initializer)
    assert largest_difference(source, target) <= 1e-6
