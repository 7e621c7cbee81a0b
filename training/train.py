"""Training loop: Adam with exponential decay, weighted cross-entropy + soft Dice, resumable.

Follows the ENet paper where it can: Adam with an exponentially decaying
learning rate (here to a tenth over the run), weight decay 2e-4 on the
convolution kernels (an L2 term, as in the original Torch code), best
weights kept by validation DSC. Two departures, both for a budget of
minutes on a CPU instead of 30 h on a GPU, and both measured:

* the initial learning rate is 2e-3, four times the paper's 5e-4. At 5e-4
  the ENet was still all background (validation DSC 0.00) after 1,800
  steps and the myocardium U-Net needed twice the steps to reach the same
  loss; at 2e-3 the ENet reached 0.60 in 400 steps;
* the loss adds a soft Dice term to a foreground-weighted cross-entropy,
  because scar is about one per cent of the pixels; the cross-entropy of
  pixels in a row's emphasis map (scarred myocardium, for the myocardium
  U-Net) is multiplied by ``1 + emphasis_weight``.

With ``ema_momentum`` set (the scar U-Net), what is validated, kept as
best and exported is the exponential moving average of the weights
(Polyak averaging, Keras's ``use_ema``) rather than the last step's: the
validation DSC of the raw weights swings by 0.03 from epoch to epoch at
the end of a run this short, and the average sits between the swings.

With ``precision="mixed_bfloat16"`` the U-Nets compute in bfloat16 on this
CPU's AMX/AVX-512 bf16 units, with float32 weights, softmax and loss, and
without XLA: on the 2 cores that is about 1.35x faster per step than float32
with XLA (``benchmarks/training_steps.py``; XLA made float32 slower, not
faster, once oneDNN's kernels were in use). The network returned and
exported is a float32 copy of the trained weights, so the ONNX graph has no
bfloat16 in it. (XLA cannot compile the ENet's MaxPoolWithArgmax either.)
The U-Nets are validated only over the last half of their epochs
(``validate_last``): their best epoch has always been in the last
third, and a validation pass costs about a seventh of an epoch.

After every epoch the run writes ``last.weights.h5``, the optimizer state,
``state.json`` (epoch, history, best) and ``curves.png``; started again it
carries on from there, and a finished run is not repeated.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from queue import Empty, Queue

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from service.pipeline.segment import nested_regions
from training.data.augment import augment_batch
from training.data.dataset import Arrays
from training.metrics import dice


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    steps_per_epoch: int = 100
    batch_size: int = 8
    learning_rate: float = 2e-3
    final_learning_rate_fraction: float = 0.1
    foreground_weight: float = 3.0
    # Cross-entropy weight of each class after background; default: foreground_weight each.
    class_weights: tuple[float, ...] | None = None
    dice_weight: float = 1.0
    emphasis_weight: float = 0.0  # extra cross-entropy weight on Arrays.emphasis pixels
    xla: bool = False  # slower than oneDNN here (benchmarks/training_steps.py)
    precision: str = "float32"  # or "mixed_bfloat16": keras' mixed-precision policy
    # Leading classes after background that are not nested (the LV cavity).
    disjoint_classes: int = 0
    # Regions (indices into the targets' last axis) whose mean validation DSC picks the
    # best epoch; None: the innermost.
    validate_regions: tuple[int, ...] | None = None
    train_crop: int | None = None  # random square crop of the input (fully convolutional nets)
    masked: bool = False  # Protocol 2 inputs: augment only inside the mask
    image_channels: int = 1  # leading input channels that are image signal (2.5-D: 3)
    # Share of the epochs, at the end, after which the validation DSC is measured and the
    # best weights kept; the last epoch is always validated.
    validate_last: float = 1.0
    # Validate and keep an exponential moving average of the weights (Polyak averaging)
    # instead of the weights of the last step; None: the raw weights.
    ema_momentum: float | None = None
    # Keep the epoch with the best validation DSC (False: the last epoch's weights, as
    # nnU-Net does; cross-validation folds validate on their held-out cases, which must
    # not choose the weights whose out-of-fold figures they then give).
    select_best: bool = True
    seed: int = 0
    # Within the validated share, validate every this many epochs (and always the last): a
    # learning curve over the whole run at a fraction of the cost.
    validate_every: int = 1
    # U-Net width: filters at the top level (doubling per level).
    base_filters: int = 16
    # Steps over which the learning rate rises linearly to its schedule's value: a fresh
    # Adam's first steps are as large as the learning rate whatever the gradient, which
    # knocks a network started from trained weights off its minimum.
    warmup_steps: int = 0

    def validates(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (1-based) ends with a validation pass."""
        if epoch == self.epochs:
            return True
        first = self.epochs - max(1, math.ceil(self.epochs * self.validate_last))
        return epoch > first and (epoch - first) % self.validate_every == 0


@dataclass
class TrainState:
    epoch: int = 0
    best_val_dsc: float = -1.0
    best_epoch: int = -1
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    done: bool = False


def soft_dice(target: tf.Tensor, foreground: tf.Tensor) -> tf.Tensor:
    inter = tf.reduce_sum(target * foreground)
    return (2.0 * inter + 1.0) / (tf.reduce_sum(target) + tf.reduce_sum(foreground) + 1.0)


def _random_crops(x: np.ndarray, y: np.ndarray, size: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    h, w = x.shape[1:3]
    xs, ys = [], []
    for xi, yi in zip(x, y, strict=True):
        r, c = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        xs.append(xi[r:r + size, c:c + size])
        ys.append(yi[r:r + size, c:c + size])
    return np.stack(xs), np.stack(ys)


def _augmented_batch(data: Arrays, config: TrainConfig, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """One training batch: random rows (and crops), augmented; targets, then emphasis, last."""
    idx = rng.integers(0, len(data.x), size=config.batch_size)
    x = data.x[idx]
    y = np.concatenate([data.regions[idx], data.emphasis[idx][..., None]], axis=-1)
    if config.train_crop:
        x, y = _random_crops(x, y, config.train_crop, rng)
    return augment_batch(x, y, rng, masked=config.masked, image_channels=config.image_channels)


def _prefetched(make: Callable[[], tuple[np.ndarray, np.ndarray]], count: int,
                depth: int = 2) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``count`` results of ``make`` from one background thread, ``depth`` ahead.

    Augmentation (numpy, one core) then runs while TensorFlow computes the
    previous step. One thread calls ``make`` in order, so the batches, and
    the run, stay the same as without prefetching.
    """
    done = object()
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for _ in range(count):
                if stop.is_set():
                    return
                queue.put(make())
        except BaseException as exc:  # handed to the consumer, raised there
            queue.put(exc)
            return
        queue.put(done)

    worker = threading.Thread(target=produce, name="augment", daemon=True)
    worker.start()
    try:
        while (item := queue.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(Empty):
                queue.get(timeout=0.1)


def class_targets(regions: tf.Tensor, disjoint: int = 0) -> tf.Tensor:
    """Region targets (..., K) to class targets (..., K+1).

    The inverse of :func:`service.pipeline.segment.nested_regions`: the scar U-Net's
    targets are the cavity, the myocardium (scar included), the scar (MVO
    included) and the MVO; its classes background, cavity, myocardium
    without scar, scar without MVO, MVO.
    """
    own, nested = regions[..., :disjoint], regions[..., disjoint:]
    outer = tf.concat([tf.ones_like(nested[..., :1]), nested], axis=-1)
    inner = tf.concat([nested, tf.zeros_like(nested[..., :1])], axis=-1)
    classes = tf.clip_by_value(outer - inner, 0.0, 1.0)
    if not disjoint:
        return classes
    background = tf.clip_by_value(classes[..., :1] - tf.reduce_sum(own, -1, keepdims=True),
                                  0.0, 1.0)
    return tf.concat([background, own, classes[..., 1:]], axis=-1)


def predict_regions(predict: Callable[[np.ndarray], tf.Tensor], x: np.ndarray,
                    disjoint: int = 0, batch_size: int = 32) -> np.ndarray:
    """Every region's probability (..., K), as :func:`nested_regions` orders them."""
    out = [nested_regions(np.asarray(predict(x[i:i + batch_size]), np.float32), disjoint)
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out)


def validation_dsc(predict: Callable[[np.ndarray], tf.Tensor], data: Arrays,
                   config: TrainConfig) -> float:
    """Mean DSC over the validated regions (pooled over the validation rows)."""
    regions = predict_regions(predict, data.x, config.disjoint_classes)
    truth = data.regions
    chosen = config.validate_regions or (truth.shape[-1] - 1,)
    return float(np.mean([dice(regions[..., k] >= 0.5, truth[..., k] >= 0.5) for k in chosen]))


@contextlib.contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """Keras' global dtype policy set to ``name`` inside the block."""
    before = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def _plot_curves(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(epochs, [h["loss"] for h in history], marker="o")
    ax[0].set(xlabel="epoch", ylabel="training loss", title=f"{title}: loss")
    validated = [h for h in history if h.get("val_dsc") is not None]
    ax[1].plot([h["epoch"] for h in validated], [h["val_dsc"] for h in validated], marker="o",
               color="tab:green")
    ax[1].set(xlabel="epoch", ylabel="validation DSC", title=f"{title}: validation DSC",
              ylim=(0, 1), xlim=ax[0].get_xlim())  # same epochs as the loss, validated or not
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


class _WarmedUp(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule whose first ``warmup_steps`` are scaled by (step + 1) / warmup_steps."""

    def __init__(self, schedule: keras.optimizers.schedules.LearningRateSchedule,
                 warmup_steps: int) -> None:
        self.schedule, self.warmup_steps = schedule, warmup_steps

    def __call__(self, step):
        ramp = keras.ops.minimum(1.0, (keras.ops.cast(step, "float32") + 1.0)
                                 / float(self.warmup_steps))
        return self.schedule(step) * ramp

    def get_config(self) -> dict:
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule),
                "warmup_steps": self.warmup_steps}


def learning_rate_schedule(config: TrainConfig, total_steps: int
                           ) -> keras.optimizers.schedules.LearningRateSchedule:
    """Exponential decay to ``final_learning_rate_fraction`` over the run, warmed up over
    its first ``warmup_steps`` where there are any."""
    decay = keras.optimizers.schedules.ExponentialDecay(
        config.learning_rate, decay_steps=total_steps,
        decay_rate=config.final_learning_rate_fraction)
    return _WarmedUp(decay, config.warmup_steps) if config.warmup_steps > 0 else decay


def _save_optimizer(optimizer: keras.optimizers.Optimizer, path: Path) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, *[v.numpy() for v in optimizer.variables])
    tmp.replace(path)


def _load_optimizer(optimizer: keras.optimizers.Optimizer, model: keras.Model,
                    path: Path) -> None:
    optimizer.build(model.trainable_variables)
    with np.load(path) as data:
        arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
    for variable, value in zip(optimizer.variables, arrays, strict=True):
        variable.assign(value)


@contextlib.contextmanager
def _averaged_weights(model: keras.Model, optimizer: keras.optimizers.Optimizer
                      ) -> Iterator[None]:
    """The model holds the optimizer's moving average of its weights inside the block.

    Without ``use_ema`` it holds its own weights. The raw weights come back
    afterwards, so training goes on from them.
    """
    if not optimizer.use_ema:
        yield
        return
    raw = [v.numpy() for v in model.trainable_variables]
    optimizer.finalize_variable_values(model.trainable_variables)
    try:
        yield
    finally:
        for variable, value in zip(model.trainable_variables, raw, strict=True):
            variable.assign(value)


def make_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, config: TrainConfig,
              n_regions: int) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The compiled training step: weighted cross-entropy + soft Dice (+ L2), one Adam update.

    Takes an input batch and its nested-region targets with the emphasis map
    as the last channel; returns the loss without the L2 term.
    """
    weights = tf.constant([1.0, *(config.class_weights
                                  or [config.foreground_weight] * n_regions)], tf.float32)
    emphasis_weight = tf.constant(config.emphasis_weight, tf.float32)

    @tf.function(reduce_retracing=True, jit_compile=config.xla)
    def step(x, y_and_emphasis):
        regions, emphasis = y_and_emphasis[..., :-1], y_and_emphasis[..., -1]
        with tf.GradientTape() as tape:
            probs = tf.clip_by_value(tf.cast(model(x, training=True), tf.float32), 1e-6, 1.0)
            targets = class_targets(regions, config.disjoint_classes)
            ce = -tf.reduce_sum(weights * targets * tf.math.log(probs), axis=-1)
            ce = ce * (1.0 + emphasis_weight * emphasis)
            own = probs[..., 1:1 + config.disjoint_classes]
            nested = tf.math.cumsum(probs[..., 1 + config.disjoint_classes:], axis=-1,
                                    reverse=True)
            predicted = tf.concat([own, nested], axis=-1)
            dice_loss = tf.add_n([1.0 - soft_dice(regions[..., k], predicted[..., k])
                                  for k in range(n_regions)]) / n_regions
            loss = tf.reduce_mean(ce) + config.dice_weight * dice_loss
            total = loss + tf.add_n(model.losses) if model.losses else loss
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    return step


def train(build: Callable[[], keras.Model], train_data: Arrays, val_data: Arrays,
          config: TrainConfig, out_dir: Path, name: str,
          other_validation: dict[str, Arrays] | None = None,
          initial_weights: Path | None = None) -> tuple[keras.Model, TrainState]:
    """Train (or resume, or reload when finished) one network; returns the best weights.

    ``other_validation``: more held-out sets measured at each validation pass (the
    shifted copies of a fold's held-out cases), recorded as ``val_dsc_<name>``; only
    ``val_data`` ever picks an epoch. ``initial_weights``: where a fresh run starts (an
    earlier stage's kept weights) instead of a random initialisation.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / "state.json"
    (out_dir / "config.json").write_text(json.dumps(asdict(config), indent=1))
    keras.utils.set_random_seed(config.seed)
    with precision_policy(config.precision):
        model = build()
    total_steps = config.epochs * config.steps_per_epoch
    schedule = learning_rate_schedule(config, total_steps)
    optimizer = keras.optimizers.Adam(schedule, use_ema=config.ema_momentum is not None,
                                      ema_momentum=config.ema_momentum or 0.99)
    state = TrainState()
    if state_path.exists():
        state = TrainState(**json.loads(state_path.read_text()))
        if state.epoch >= config.epochs:
            model.load_weights(out_dir / "best.weights.h5")
            return _as_float32(build, model, config), state
        model.load_weights(out_dir / "last.weights.h5")
        _load_optimizer(optimizer, model, out_dir / "optimizer.npz")
    else:
        if initial_weights is not None:
            model.load_weights(initial_weights)
        # Its slots made now, after the weights (the moving average starts from them, as
        # when the first update makes them): a step that creates variables is traced twice,
        # 14 s of an ENet leg's first step.
        optimizer.build(model.trainable_variables)

    step = make_step(model, optimizer, config, n_regions=train_data.regions.shape[-1])

    # Validation compiled like the steps: eager inference took a fifth of each U-Net epoch.
    infer = tf.function(functools.partial(model, training=False), reduce_retracing=True,
                        jit_compile=config.xla)

    while state.epoch < config.epochs:
        started = time.perf_counter()
        rng = np.random.default_rng([config.seed, state.epoch])
        losses = []
        batches = _prefetched(functools.partial(_augmented_batch, train_data, config, rng),
                              config.steps_per_epoch)
        bar = tqdm(batches, total=config.steps_per_epoch, unit="step", mininterval=2.0,
                   desc=f"{name} epoch {state.epoch + 1}/{config.epochs}")
        for x, y in bar:
            losses.append(float(step(tf.constant(x), tf.constant(y))))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        model.save_weights(out_dir / "last.weights.h5")
        val_dsc, others = None, {}
        if config.validates(state.epoch + 1):
            with _averaged_weights(model, optimizer):
                val_dsc = validation_dsc(infer, val_data, config)
                others = {f"val_dsc_{k}": validation_dsc(infer, v, config)
                          for k, v in (other_validation or {}).items()}
                last = state.epoch + 1 == config.epochs
                if (val_dsc > state.best_val_dsc) if config.select_best else last:
                    state.best_val_dsc, state.best_epoch = val_dsc, state.epoch + 1
                    model.save_weights(out_dir / "best.weights.h5")
        state.epoch += 1
        state.seconds += time.perf_counter() - started
        state.history.append({"epoch": state.epoch, "loss": float(np.mean(losses)),
                              "val_dsc": val_dsc, "steps": state.epoch * config.steps_per_epoch,
                              "seconds": state.seconds} | others)
        _save_optimizer(optimizer, out_dir / "optimizer.npz")
        state.done = state.epoch >= config.epochs
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=1))
        tmp.replace(state_path)
        _plot_curves(state.history, out_dir / "curves.png", name)
        measured = ("not validated this epoch" if val_dsc is None
                    else f"validation DSC {val_dsc:.4f}")
        best = ("" if state.best_epoch < 0
                else f", best {state.best_val_dsc:.4f} at epoch {state.best_epoch}")
        tqdm.write(f"{name}: epoch {state.epoch}/{config.epochs}, loss {np.mean(losses):.4f}, "
                   f"{measured}{best}")
    model.load_weights(out_dir / "best.weights.h5")
    return _as_float32(build, model, config), state


def _as_float32(build: Callable[[], keras.Model], model: keras.Model, config: TrainConfig
                ) -> keras.Model:
    """A float32 copy of a mixed-precision network (its weights are float32 already)."""
    if config.precision == "float32":
        return model
    with precision_policy("float32"):
        copy = build()
    copy.set_weights(model.get_weights())
    return copy
