"""Fold ensembles and test-time augmentation behind the Predictor interface."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.config import REPO_ROOT
from service.errors import ModelStoreError
from service.pipeline.ensemble import MeanOfModels, SymmetryAverage
from service.pipeline.infer import OnnxModel
from service.pipeline.registry import ensemble_digest, load_registry, sha256_of

MODELS_DIR = REPO_ROOT / "models"


def tiny_network(path: Path, weights: np.ndarray, side: int, channels: int) -> Path:
    """A per-pixel linear map and softmax: (N, side, side, channels) -> (N, side, side, K)."""
    classes = weights.shape[1]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["image", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, side, side, channels])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                       [None, side, side, classes])],
        initializer=[numpy_helper.from_array(weights.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_mean_of_models_is_the_mean_of_the_members() -> None:
    x = np.random.default_rng(0).random((3, 8, 8, 2)).astype(np.float32)
    mean = MeanOfModels([lambda b: b, lambda b: 3 * b, lambda b: 5 * b])
    assert np.allclose(mean(x), 3 * x)
    with pytest.raises(ValueError):
        MeanOfModels([])


def test_symmetry_average_undoes_each_symmetry() -> None:
    x = np.random.default_rng(1).random((2, 6, 6, 3)).astype(np.float32)
    # A per-pixel network commutes with every flip and rotation: the average is itself.
    assert np.allclose(SymmetryAverage(lambda b: b ** 2)(x), x ** 2, atol=1e-6)

    # One that looks at the top row only does not: the average mixes all eight views.
    def top_row(b: np.ndarray) -> np.ndarray:
        out = np.zeros_like(b)
        out[:, 0] = b[:, 0]
        return out

    averaged = SymmetryAverage(top_row)(x)
    assert not np.allclose(averaged, top_row(x))
    # Each view is answered in one batch: 8 x the slices in a single call.
    calls = []
    SymmetryAverage(lambda b: calls.append(len(b)) or b)(x)
    assert calls == [16]


def _models_copy(tmp_path: Path) -> tuple[Path, dict, dict, tuple[int, int, int]]:
    """The shipped models folder copied, its manifest, its scar U-Net entry and that
    network's (side, channels, classes)."""
    copy = tmp_path / "models"
    shutil.copytree(MODELS_DIR, copy)
    data = json.loads((copy / "manifest.json").read_text())
    entry = next(m for m in data["models"] if m["name"] == "scar-unet")
    shape = (entry["input"]["shape"][1], entry["input"]["shape"][3],
             len(entry["output"]["classes"]))
    return copy, data, entry, shape


def test_the_registry_serves_the_mean_of_an_ensembles_members(tmp_path: Path) -> None:
    """A manifest entry with members runs every file and averages them; the report's digest
    covers every member; a tampered member is refused."""
    copy, data, entry, (side, channels, classes) = _models_copy(tmp_path)
    rng = np.random.default_rng(2)
    files = [tiny_network(copy / f"tiny-{k}.onnx", rng.normal(size=(channels, classes)),
                          side, channels) for k in range(3)]
    entry["members"] = [{"file": f.name, "sha256": sha256_of(f), "fold": k}
                        for k, f in enumerate(files)]
    entry["file"], entry["sha256"] = files[0].name, sha256_of(files[0])
    entry.pop("int8", None)
    (copy / "manifest.json").write_text(json.dumps(data))

    loaded = load_registry(copy, "cpu").models["scar-unet"]
    x = rng.random((2, side, side, channels)).astype(np.float32)
    expected = np.mean([OnnxModel(f)(x) for f in files], axis=0)
    assert np.allclose(loaded.network.predict(x), expected, atol=1e-6)
    assert loaded.sha256 == ensemble_digest([m["sha256"] for m in entry["members"]])
    assert loaded.precision == "fp32"

    files[2].write_bytes(files[2].read_bytes()[:-1] + b"\0")
    with pytest.raises(ModelStoreError, match="sha256"):
        load_registry(copy, "cpu")


def test_an_ensemble_runs_its_members_int8_copies_where_the_release_made_int8_the_default(
        tmp_path: Path) -> None:
    """Every member's int8 copy, or none: where the entry's int8 holds (default, a pipeline
    it names, or MODEL_PRECISION=int8) and every member has one; the digest names the files
    that ran."""
    copy, data, entry, (side, channels, classes) = _models_copy(tmp_path)
    rng = np.random.default_rng(3)
    # Stand-ins: the "int8 copies" are other weights, so which files ran shows in the answer.
    fp32 = [tiny_network(copy / f"m{k}.onnx", rng.normal(size=(channels, classes)), side,
                         channels) for k in range(3)]
    int8 = [tiny_network(copy / f"m{k}-int8.onnx", rng.normal(size=(channels, classes)), side,
                         channels) for k in range(3)]
    entry["members"] = [{"file": f.name, "sha256": sha256_of(f), "fold": k,
                         "int8": {"file": q.name, "sha256": sha256_of(q)}}
                        for k, (f, q) in enumerate(zip(fp32, int8, strict=True))]
    entry["file"], entry["sha256"] = fp32[0].name, sha256_of(fp32[0])
    entry["int8"] = {"default": False, "pipelines": ["cascade-unet"]}
    (copy / "manifest.json").write_text(json.dumps(data))
    x = rng.random((2, side, side, channels)).astype(np.float32)

    def mean_of(files):
        return np.mean([OnnxModel(f)(x) for f in files], axis=0)

    registry = load_registry(copy, "cpu")
    in_cascade = registry.pipelines["cascade-unet"].scar
    assert in_cascade.precision == "int8"
    assert np.allclose(in_cascade.network.predict(x), mean_of(int8), atol=1e-6)
    assert in_cascade.sha256 == ensemble_digest([sha256_of(q) for q in int8])
    alone = registry.models["scar-unet"]  # not a pipeline the int8 held in
    assert alone.precision == "fp32"
    assert np.allclose(alone.network.predict(x), mean_of(fp32), atol=1e-6)
    assert load_registry(copy, "cpu", precision="fp32").pipelines["cascade-unet"].scar \
        .precision == "fp32"
    assert load_registry(copy, "cpu", precision="int8").models["scar-unet"].precision == "int8"

    del entry["members"][1]["int8"]  # one member without a copy: the ensemble stays float32
    (copy / "manifest.json").write_text(json.dumps(data))
    assert load_registry(copy, "cpu", precision="int8").models["scar-unet"].precision == "fp32"


def test_symmetry_answers_agree_for_a_pointwise_network_and_differ_for_one_that_sees_position(
        ) -> None:
    """The disagreement layer is the spread of these answers: nil where the network's answer
    does not depend on how its input is turned, not nil where it does."""
    from service.pipeline.ensemble import symmetry_answers

    batch = np.random.default_rng(3).normal(size=(2, 8, 8, 1)).astype(np.float32)
    pointwise = symmetry_answers(lambda x: 1.0 / (1.0 + np.exp(-x)), batch)
    assert pointwise.shape == (8, 2, 8, 8, 1)
    assert np.allclose(pointwise.std(axis=0), 0.0, atol=1e-6)
    ramp = np.linspace(0.0, 1.0, 8, dtype=np.float32)[None, None, :, None]
    positional = symmetry_answers(lambda x: np.broadcast_to(ramp, x.shape).copy(), batch)
    assert positional.std(axis=0).max() > 0.2


def test_the_disagreement_layer_asks_each_member_not_their_mean() -> None:
    """Two pointwise members that part: each agrees with itself under every symmetry, and
    so does their mean (as served), yet the layer must show where they differ."""
    from service.pipeline.preprocess import InputSpec
    from service.pipeline.segment import Network, region_spread

    spec = InputSpec(crop="heart_box", shape=(32, 32), margin_mm=4.0, min_side_mm=20.0)
    yy, xx = np.indices((64, 64))
    distance = np.hypot(yy - 32, xx - 32)
    ring = np.repeat(((distance >= 8) & (distance < 14))[None], 2, axis=0)
    images = [np.random.default_rng(k).normal(100.0, 20.0, (64, 64)) for k in range(2)]

    def member(scar: float):
        def predict(batch: np.ndarray) -> np.ndarray:
            out = np.empty((*batch.shape[:3], 2), np.float32)
            out[..., 1] = scar
            out[..., 0] = 1.0 - scar
            return out
        return predict

    alone = Network(member(0.2), spec, ("background", "scar"))
    assert region_spread(images, (1.0, 1.0), ring, alone).max() < 1e-6
    served = Network(lambda b: MeanOfModels([member(0.2), member(0.6)])(b), spec,
                     ("background", "scar"))
    assert region_spread(images, (1.0, 1.0), ring, served).max() < 1e-6  # the mean hides it
    both = Network(MeanOfModels([member(0.2), member(0.6)]), spec, ("background", "scar"))
    spread = region_spread(images, (1.0, 1.0), ring, both)
    assert spread.shape == (2, 64, 64)
    assert np.isclose(spread[:, 32, 32], 0.2, atol=1e-4).all()  # std of 0.2 and 0.6
