"""Network structure, a few optimisation steps, and ONNX parity (no full training here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
ort = pytest.importorskip("onnxruntime")
keras = pytest.importorskip("keras")

from training.export import export_onnx  # noqa: E402
from training.nets import build_enet, build_unet  # noqa: E402
from training.nets.enet import STAGE_COUNTS  # noqa: E402


@pytest.fixture(scope="module")
def enet() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_enet()


def test_enet_initial_block_gives_14_maps(enet) -> None:
    assert enet.get_layer("initial_conv").filters == 13
    assert tuple(enet.get_layer("initial_concat").output.shape) == (None, 32, 32, 14)


def test_enet_stage_counts(enet) -> None:
    # Layers are named b<stage>_<i>_...: count distinct bottlenecks per stage.
    per_stage = []
    for stage in range(1, 6):
        prefixes = {"_".join(layer.name.split("_")[:2]) for layer in enet.layers
                    if layer.name.startswith(f"b{stage}_")}
        per_stage.append(len(prefixes))
    assert tuple(per_stage) == STAGE_COUNTS == (5, 9, 8, 3, 2)


def test_enet_size_and_output(enet) -> None:
    assert 300_000 < enet.count_params() < 500_000
    out = enet(np.zeros((3, 64, 64, 1), np.float32), training=False).numpy()
    assert out.shape == (3, 64, 64, 2)
    assert np.allclose(out.sum(-1), 1.0, atol=1e-5)


def test_enet_uses_dilated_and_asymmetric_convolutions(enet) -> None:
    dilations = sorted({layer.dilation_rate[0] for layer in enet.layers
                        if isinstance(layer, keras.layers.Conv2D) and layer.dilation_rate[0] > 1})
    assert dilations == [2, 4, 8, 16]
    assert any(layer.kernel_size == (5, 1) for layer in enet.layers
               if isinstance(layer, keras.layers.Conv2D))


@pytest.mark.slow
@pytest.mark.parametrize("build", [lambda: build_unet((64, 64, 1), base_filters=8),
                                   lambda: build_enet()])
def test_a_few_steps_reduce_the_loss(build) -> None:
    keras.utils.set_random_seed(1)
    model = build()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 64, 64, 1)).astype(np.float32)
    yy, xx = np.mgrid[:64, :64]
    y = np.broadcast_to(((yy - 32) ** 2 + (xx - 32) ** 2 < 200), (4, 64, 64)).astype(np.int32)
    x += 2.0 * y[..., None]
    # Eager: tracing the ENet's training step costs twice its twelve steps.
    model.compile(optimizer=keras.optimizers.Adam(5e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(), run_eagerly=True)
    # Training-mode loss (batch statistics), first epoch against the last.
    losses = model.fit(x, y, epochs=12, batch_size=4, verbose=0).history["loss"]
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.slow
@pytest.mark.parametrize("task", ["myocardium_unet", "scar_unet", "enet_p2"])
def test_onnx_export_parity(tmp_path: Path, task: str) -> None:
    """Each network as the training command builds and exports it (the U-Nets are built with
    free height and width, trained on crops, and exported at the model's input size)."""
    import onnx

    from training.data.dataset import TASKS
    from training.run import build_network

    spec = TASKS[task]
    keras.utils.set_random_seed(2)
    model = build_network(task)
    # Move batch-norm statistics away from their defaults so parity means something.
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            mean, var = layer.moving_mean, layer.moving_variance
            mean.assign(rng.normal(0, 0.1, mean.shape).astype(np.float32))
            var.assign(rng.uniform(0.5, 1.5, var.shape).astype(np.float32))
    path = tmp_path / "model.onnx"
    sha = export_onnx(model, path, input_hw=spec.shape)
    assert len(sha) == 64
    proto = onnx.load(path)
    assert proto.opset_import[0].version >= 13
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value, "batch axis must be dynamic"
    assert tuple(d.dim_value for d in dims[1:]) == (*spec.shape, spec.channels)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = rng.normal(size=(batch, *spec.shape, spec.channels)).astype(np.float32)
        ref = model(x, training=False).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-4
