"""Issue 53: does a small CNN on ring-centred patches tell LGE from rendered cine and T2 where
the contrast measures cannot, and does it read the myocardium's nulling on real images?

``python -m training.studies.patch_gate_study --emidec ../shared/data/emidec`` ``[--work
runs/gate_study]`` reads the gate study's cache (``gate_flag_study`` must have run on the
same ``--work``), cuts 64 x 64 patches of 160 mm around the myocardium network's ring on every
slice with one (image scaled to its 1st-99th percentiles, the ring, the in-image mask), and
trains a three-block CNN (TensorFlow, CPU) on the *choosing* rows: LGE (EMIDEC ``train`` and
``validation``, as acquired and darkened, and LGE phantoms) against cine and T2 renders with
LGE headers. Five fold models (EMIDEC by patient, phantoms by heart) score the choosing rows
out of fold; the model on every choosing row scores the held-out seeds. A series' score is
its slices' mean logit; it is flagged below a low quantile of the out-of-fold LGE scores.

Then the question that decides whether such a network may serve: does it react to what
tells LGE apart, on real pixels? Two checks on EMIDEC, each case scored by the fold model
that never saw it: the fixed other-centre copies (``emidec.shifted_copies``: real LGE
with other looks, which the gate should leave alone or flag, not refuse), and every case
with its healthy myocardium *un-nulled* (raised to the 75th percentile of the tissue 5-20
mm around it, as cine and T2 show it): a network that reads contrast flags those.

Writes ``docs/results/patch_gate_study.json`` and the ``patch-gate-study`` block of
docs/experiments.md; nothing ships from it (no network is exported). Real pixels stay in
``--work``.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from service.pipeline.registry import load_registry
from service.pipeline.segment import myocardium_probability, ring_from
from training.data import emidec
from training.data.folds import FOLDS_FILE
from training.studies import DOCS, gate_flag_study
from training.studies.gate_flag_study import FOLDS, is_lge

FOV_MM, PATCH = 160.0, 64
MIN_RING_PIXELS = 20
# Quantiles (%) of the out-of-fold LGE scores under which a series is flagged: the lowest
# LGE, and two that give up 1 and 2.5 % of LGE.
FLAG_QUANTILES = (0.0, 1.0, 2.5)
UN_NULLED_PERCENTILE = 75.0
ROOT = Path(__file__).resolve().parents[2]


def ring_patches(images: Sequence[np.ndarray], rings: np.ndarray,
                 spacing: tuple[float, float], fov_mm: float = FOV_MM,
                 size: int = PATCH) -> np.ndarray:
    """(n, size, size, 3) float32, one per slice with a ring: the image resampled on a
    ``fov_mm`` square centred on the ring (scaled to its 1st-99th percentiles), the ring,
    and where the square lies inside the image."""
    grid = (np.arange(size) - (size - 1) / 2) * fov_mm / size
    out = []
    for image, ring in zip(images, rings, strict=True):
        if ring.sum() < MIN_RING_PIXELS:
            continue
        cy, cx = ndimage.center_of_mass(ring)
        coords = np.stack(np.broadcast_arrays(cy + grid[:, None] / spacing[0],
                                              cx + grid[None, :] / spacing[1]))
        pixels = ndimage.map_coordinates(np.asarray(image, np.float32), coords, order=1,
                                         mode="constant", cval=np.nan)
        ring_channel = ndimage.map_coordinates(ring.astype(np.float32), coords, order=1)
        inside = np.isfinite(pixels)
        low, high = np.percentile(pixels[inside], [1, 99])
        scaled = np.clip((pixels - low) / max(high - low, 1e-6), -0.5, 1.5)
        out.append(np.stack([np.where(inside, scaled, 0.0), ring_channel,
                             inside.astype(np.float32)], -1))
    return np.asarray(out, np.float32).reshape(-1, size, size, 3)


def un_nulled(images: Sequence[np.ndarray], myocardium: np.ndarray, scar: np.ndarray,
              spacing: tuple[float, float], percentile: float = UN_NULLED_PERCENTILE
              ) -> list[np.ndarray]:
    """The slices with the healthy myocardium raised so that its 25th percentile reaches
    ``percentile`` of the tissue 5-20 mm around the heart (soft-edged, texture kept): LGE
    made to look as if the myocardium had not been nulled."""
    out = []
    for image, wall, infarct in zip(images, myocardium, scar, strict=True):
        image = np.asarray(image, np.float32)
        healthy = wall & ~infarct
        if healthy.sum() < MIN_RING_PIXELS:
            out.append(image)
            continue
        distance = ndimage.distance_transform_edt(~ndimage.binary_fill_holes(wall),
                                                  sampling=spacing)
        around = image[(distance > 5) & (distance <= 20)]
        lift = max(float(np.percentile(around, percentile))
                   - float(np.percentile(image[healthy], 25)), 0.0)
        out.append(image + lift * ndimage.gaussian_filter(healthy.astype(np.float32), 0.7))
    return out


def patch_network(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((PATCH, PATCH, 3))
    x = inputs
    for filters in (16, 32, 64):
        for _ in range(2):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPool2D()(x)
    x = keras.layers.Dropout(0.3)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.BinaryCrossentropy(from_logits=True))
    return model


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another scanner's grey levels and noise, and any orientation (a batch at once)."""
    x = x.copy()
    n = len(x)
    image = x[..., 0]
    image = np.sign(image) * np.abs(image) ** np.exp(rng.normal(0, 0.25, (n, 1, 1)))
    image = image * rng.uniform(0.8, 1.2, (n, 1, 1)) + rng.normal(0, 0.05, (n, 1, 1))
    image = image + rng.normal(0, 1, image.shape) * rng.uniform(0, 0.06, (n, 1, 1))
    x[..., 0] = image * x[..., 2]
    x = np.rot90(x, int(rng.integers(4)), axes=(1, 2))
    return np.ascontiguousarray(x[:, ::-1] if rng.random() < 0.5 else x)


def train(x: np.ndarray, lge: np.ndarray, epochs: int, seed: int):
    """A network on slices ``x`` (LGE or not), the two classes weighted equally."""
    model = patch_network(seed)
    rng = np.random.default_rng(seed)
    share = float(lge.mean())
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(order), 64):
            batch = order[start:start + 64]
            y = lge[batch].astype(np.float32)
            model.train_on_batch(augment(x[batch], rng), y,
                                 sample_weight=np.where(y == 1, 0.5 / share, 0.5 / (1 - share)))
    return model


def series_scores(model, patches: Sequence[np.ndarray]) -> list[float]:
    """Each series' mean slice logit (LGE high)."""
    sizes = [len(p) for p in patches]
    logits = model.predict(np.concatenate(patches), batch_size=256, verbose=0)[:, 0]
    return [float(v.mean()) for v in np.split(logits, np.cumsum(sizes)[:-1])]


def _ring(series, network) -> np.ndarray:
    return ring_from(myocardium_probability(series.images, series.spacing, network), network)


def patches_and_un_nulled(group: str, series, ring: np.ndarray) -> dict:
    """What this study reads of a gate-study series, beside the gate's own measures: its
    patches, and for EMIDEC (which has expert contours) its un-nulled patches and gate
    inputs."""
    out = {"patches": ring_patches(series.images, ring, series.spacing)}
    if group.startswith("EMIDEC"):
        images = un_nulled(series.images, series.true_myocardium, series.true_scar,
                           series.spacing)
        out["un_nulled"] = {"patches": ring_patches(images, ring, series.spacing),
                            **gate_flag_study.gate_inputs(images, ring, series.spacing)}
    return out


def tally(entries: Sequence[tuple[str, str, float]], thresholds: dict[str, float]) -> dict:
    """Per set: the gate's outcomes, and at each threshold the series the patches flag
    (of all) and those left ``ok`` by both."""
    table: dict[str, dict] = {}
    for name, outcome, score in entries:
        t = table.setdefault(name, {"series": 0, "gate": Counter(),
                                    "patches_flag": Counter(), "ok_by_both": Counter()})
        t["series"] += 1
        t["gate"][outcome] += 1
        for q, threshold in thresholds.items():
            flagged = score < threshold
            t["patches_flag"][q] += flagged
            t["ok_by_both"][q] += outcome == "ok" and not flagged
    for t in table.values():
        t["gate"] = {k: t["gate"][k] for k in ("refused", "flagged", "ok")}
        t["patches_flag"], t["ok_by_both"] = dict(t["patches_flag"]), dict(t["ok_by_both"])
    return table


def docs_block(result: dict) -> str:
    qs = list(result["thresholds"])
    head = " / ".join(f"q{q}" for q in qs)
    lines = [f"| set | series | gate: refused / flagged / ok | patches flag ({head}) | "
             f"ok by both ({head}) |", "|---|---|---|---|---|"]
    for name, t in result["sets"].items():
        gate = t["gate"]
        lines.append(f"| {name} | {t['series']} | {gate['refused']} / {gate['flagged']} / "
                     f"{gate['ok']} | {' / '.join(str(t['patches_flag'][q]) for q in qs)} | "
                     f"{' / '.join(str(t['ok_by_both'][q]) for q in qs)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emidec", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("runs/gate_study"))
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", type=Path, default=DOCS / "results" / "patch_gate_study.json")
    parser.add_argument("--docs", type=Path, default=DOCS / "experiments.md")
    args = parser.parse_args(argv)
    from training.generated import write_results

    groups = gate_flag_study.study_sources(args.emidec, args.work)
    rows = gate_flag_study.readings(groups, args.work, extra=patches_and_un_nulled)
    rows = [r for r in rows if len(r["patches"])]
    choosing = [r for r in rows if "held-out" not in r["group"]]
    feature_model, feature_folds, _ = gate_flag_study.choose_model(choosing)

    def fit(subset: Sequence[dict], seed: int):
        x = np.concatenate([r["patches"] for r in subset])
        y = np.concatenate([np.full(len(r["patches"]), is_lge(r["kind"])) for r in subset])
        return train(x, y, args.epochs, seed)

    fold_nets = {f: fit([r for r in choosing if r["fold"] != f], f) for f in range(FOLDS)}
    for f, net in fold_nets.items():
        mine = [r for r in choosing if r["fold"] == f]
        for r, s in zip(mine, series_scores(net, [r["patches"] for r in mine]), strict=True):
            r["patch_score"] = s
    held = [r for r in rows if "held-out" in r["group"]]
    every = fit(choosing, FOLDS)
    for r, s in zip(held, series_scores(every, [r["patches"] for r in held]), strict=True):
        r["patch_score"] = s
    lge_scores = [r["patch_score"] for r in choosing if is_lge(r["kind"])]
    thresholds = {str(q): float(np.percentile(lge_scores, q)) for q in FLAG_QUANTILES}
    entries = [(gate_flag_study.set_name(r), gate_flag_study.gate_outcome(
        r, gate_flag_study.model_for(r, feature_model, feature_folds)), r["patch_score"])
        for r in rows]

    # The checks on real pixels: each EMIDEC case by the fold models that never saw it.
    folds = json.loads(FOLDS_FILE.read_text())["folds"]
    network = load_registry(args.models, "cpu", precision="fp32", intra_op_threads=1
                            ).pipelines["cascade-unet"].myocardium.network
    checks: list[tuple[str, str, float]] = []
    for case in emidec.shifted_copies(args.emidec, sorted(folds)):
        series = case.read()
        ring = _ring(series, network)
        patches = ring_patches(series.images, ring, series.spacing)
        if len(patches):
            checks.append(("EMIDEC other-centre copies, out of fold",
                           gate_flag_study.gate_outcome(
                               gate_flag_study.gate_inputs(series.images, ring, series.spacing),
                               feature_folds[folds[case.case]]),
                           series_scores(fold_nets[folds[case.case]], [patches])[0]))
    for row in rows:
        if "un_nulled" in row:  # EMIDEC; its fold is the case's
            changed = row["un_nulled"]
            checks.append((f"{row['kind']}, myocardium un-nulled, out of fold",
                           gate_flag_study.gate_outcome(changed, feature_folds[row["fold"]]),
                           series_scores(fold_nets[row["fold"]], [changed["patches"]])[0]))
    result = {"about": __doc__.split("\n\n")[0], "epochs": args.epochs, "fov_mm": FOV_MM,
              "patch": PATCH, "un_nulled_percentile": UN_NULLED_PERCENTILE,
              "thresholds": thresholds,
              "sets": tally(sorted(entries) + checks, thresholds)}
    write_results(result, args.out, args.docs, "patch-gate-study", docs_block(result))
    print(docs_block(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
