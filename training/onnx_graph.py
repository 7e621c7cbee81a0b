"""Rewrites of exported ONNX graphs that change how fast a session is made, never an answer.

tf2onnx writes each Keras PReLU as ``relu(x) + (-a) * relu(-x)``: five nodes where ONNX
has one, ``PRelu(x, a)``. An ENet has 66 of them, and making an onnxruntime session of its
594 nodes takes about a quarter of a second against 70 ms fused
(benchmarks/results/enet_sessions.json); the service makes a session of every member before
it says ready, so the release ships its ENets fused (:func:`fused_copy`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

# A fused copy must answer as its source does, to this much, or the source ships as it is.
SAME_ANSWER = 1e-6


def fuse_prelus(model: onnx.ModelProto) -> int:
    """Rewrites, in place, every ``relu(x) + (-a) * relu(-x)`` as ``PRelu(x, a)``; returns
    how many. Exact: both compute x or a * x with one rounding."""
    graph = model.graph
    constants = {i.name: i for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    replaced, dropped, negated_slopes = {}, set(), set()
    for neg in [n for n in graph.node if n.op_type == "Neg"]:
        x = neg.input[0]
        chain = _single_consumers(consumers, neg.output[0], 3)
        relus_of_x = [c for c in consumers.get(x, []) if c.op_type == "Relu"]
        if chain is None or not relus_of_x:
            continue
        relu_of_neg, times_slope, plus = chain
        negated = next((i for i in times_slope.input if i in constants), None)
        relu_of_x = next((r for r in relus_of_x if r.output[0] in plus.input), None)
        if (relu_of_neg.op_type, times_slope.op_type, plus.op_type) != ("Relu", "Mul", "Add") \
                or negated is None or relu_of_x is None \
                or set(plus.input) != {relu_of_x.output[0], times_slope.output[0]} \
                or len(consumers[relu_of_x.output[0]]) != 1:
            continue
        negated_slopes.add(negated)
        slope = f"{negated}_prelu_slope"
        graph.initializer.append(numpy_helper.from_array(
            -numpy_helper.to_array(constants[negated]), slope))
        replaced[id(plus)] = helper.make_node("PRelu", [x, slope], [plus.output[0]])
        dropped.update(id(n) for n in (neg, relu_of_neg, times_slope, relu_of_x))
    kept = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    # The negated slopes nothing reads any more (onnxruntime warns of each at every load).
    read = {name for node in graph.node for name in node.input}
    unread = [i for i in graph.initializer if i.name in negated_slopes and i.name not in read]
    for initializer in unread:
        graph.initializer.remove(initializer)
    onnx.checker.check_model(model)
    return len(replaced)


def _single_consumers(consumers: dict[str, list], name: str, length: int) -> list | None:
    """The chain of ``length`` nodes each consuming the previous one's only output, alone."""
    chain = []
    for _ in range(length):
        users = consumers.get(name, [])
        if len(users) != 1:
            return None
        chain.append(users[0])
        name = users[0].output[0]
    return chain


def largest_difference(a: Path, b: Path, seed: int = 0) -> float:
    """The largest absolute difference between two networks' answers to one random batch."""
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (a, b)]
    spec = sessions[0].get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 2 for d in spec.shape]
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    answers = [s.run(None, {s.get_inputs()[0].name: x})[0] for s in sessions]
    return float(np.abs(answers[0] - answers[1]).max())


def fused_copy(source: Path, target: Path) -> int:
    """Copy ``source`` to ``target`` with its PReLUs fused where that leaves its answers as
    they were (checked on a random batch); returns how many were fused (0: a plain copy)."""
    model = onnx.load(source)
    fused = fuse_prelus(model)
    if not fused:
        shutil.copy2(source, target)
        return 0
    onnx.save(model, target)
    if largest_difference(source, target) > SAME_ANSWER:
        shutil.copy2(source, target)
        return 0
    return fused
