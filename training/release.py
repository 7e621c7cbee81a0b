"""``models/``: the ONNX files, ``manifest.json``, a model card per model, EVALUATION.md.

The manifest is what the service trusts: it loads only files whose sha256
matches, and cuts its inputs as each model's ``input`` entry says.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from service.pipeline.preprocess import InputSpec
from service.pipeline.registry import ensemble_digest, sha256_of
from training.data.dataset import CLASSES
from training.evaluation.report import review_choice_text

MANIFEST_SCHEMA = 1
def not_clinical(training_data: dict) -> str:
    real = training_data.get("emidec") or {}
    return (f"Research use only: trained on synthetic phantoms and {real.get('train_cases', 0)} "
            f"real LGE scans from one centre (EMIDEC), evaluated on held-out phantoms and "
            f"{real.get('test_cases', 0)} held-out EMIDEC cases; not validated clinically; "
            f"not for clinical use.")
PHANTOM_ONLY = ("Trained and evaluated on synthetic phantoms only; not validated on patient "
                "data; not for clinical use.")


@dataclass(frozen=True)
class ModelEntry:
    key: str  # task name in training (myocardium_unet, scar_unet, enet_p1, enet_p2)
    name: str
    architecture: str
    purpose: str
    classes: tuple[str, ...]
    paper: str


MODELS = (
    ModelEntry("myocardium_unet", "myocardium-unet", "U-Net, 4 levels, 16-128 filters",
               "LV myocardium on the whole slice at 2 mm. Its bounding box places the scar "
               "U-Net's crop (which redraws the myocardium there, for the cascade); its mask "
               "is the myocardium of the ENet pipelines and Protocol 2's multiplier.",
               CLASSES["myocardium_unet"], "seed 000 (cascade, CNN1)"),
    ModelEntry("scar_unet", "scar-unet", "U-Net, 4 levels, 16-128 filters",
               "Scar (LGE) inside the square around the heart's bounding box, and the "
               "myocardium there redrawn at the box's finer pixels (it replaces the "
               "myocardium U-Net's, which placed the box).",
               CLASSES["scar_unet"], "seed 000 (cascade, CNN2)"),
    ModelEntry("enet_p2", "enet-p2", "modified ENet (14-map initial block, 5/9/8/3/2 "
               "bottlenecks, max unpooling)",
               "Scar on the 64x64 Hough-circle crop multiplied by the myocardium mask "
               "(Protocol 2).", CLASSES["enet_p2"], "seed 001 (Protocol 2)"),
    ModelEntry("enet_p1", "enet-p1", "modified ENet (14-map initial block, 5/9/8/3/2 "
               "bottlenecks, max unpooling)",
               "Scar on the raw 64x64 Hough-circle crop (Protocol 1).",
               CLASSES["enet_p1"], "seed 001 (Protocol 1)"),
)

PIPELINES = {
    "cascade-unet": {"myocardium": "myocardium-unet", "scar": "scar-unet", "default": True},
    "enet": {"myocardium": "myocardium-unet", "scar": "enet-p2", "default": False},
    "enet-raw": {"myocardium": "myocardium-unet", "scar": "enet-p1", "default": False},
}


def pipelines(crop_rings: Mapping[str, str] | None = None) -> dict:
    """The manifest's pipelines; ``crop_rings`` (scar task -> task) gives a pipeline whose
    scar network's crop the release chose to take from another network's ring its ``ring``."""
    names = {m.key: m.name for m in MODELS}
    keys = {m.name: m.key for m in MODELS}
    out = {}
    for name, parts in PIPELINES.items():
        ring = (crop_rings or {}).get(keys[parts["scar"]])
        out[name] = dict(parts) | ({"ring": names[ring]} if ring else {})
    return out


def _clean(value):
    """JSON has no NaN: missing figures become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def build_manifest(version: str, onnx_files: Mapping[str, Path], specs: Mapping[str, InputSpec],
                   parameters: Mapping[str, int], training: Mapping[str, dict],
                   evaluation: Mapping[str, dict], training_data: dict,
                   thresholds: Mapping[str, float],
                   intervals: Mapping[str, dict] | None = None,
                   int8: Mapping[str, dict] | None = None,
                   members: Mapping[str, list[Path]] | None = None,
                   post_processing: Mapping[str, dict] | None = None,
                   crop_rings: Mapping[str, str] | None = None) -> dict:
    """The manifest; ``int8`` (by task): each int8 copy's file, sha256, whether it is the
    default (it held accuracy) and how it was calibrated (an ensemble's: ``members``, each
    member's file and sha256, written into its member); ``members`` (by task): the files
    of an ensemble (the cross-validation folds, in fold order), which the service averages;
    ``post_processing`` (by task): settings of its masks (``complete_ring``);
    ``crop_rings``: see :func:`pipelines`."""
    models = []
    for entry in MODELS:
        path = onnx_files[entry.key]
        spec = specs[entry.key]
        entry_int8 = dict((int8 or {}).get(entry.key) or {})
        member_int8 = entry_int8.pop("members", None)  # an ensemble's: one per member
        ensemble = []
        for fold, member in enumerate((members or {}).get(entry.key, [])):
            ensemble.append({"file": member.name, "sha256": sha256_of(member), "fold": fold}
                            | ({"int8": member_int8[fold]} if member_int8 else {}))
        models.append({
            "name": entry.name, "version": version, "file": path.name,
            "sha256": sha256_of(path), "architecture": entry.architecture,
            "parameters": int(parameters[entry.key]), "paper": entry.paper,
            "purpose": entry.purpose,
            "input": {"name": "image", "dtype": "float32",
                      "shape": [None, *spec.shape, spec.channels],
                      "preprocessing": spec.to_dict()},
            "output": {"name": "probabilities", "shape": [None, *spec.shape, len(entry.classes)],
                       "classes": list(entry.classes), "activation": "softmax",
                       "threshold": thresholds[entry.key]}
            | ({"interval": intervals[entry.key]} if intervals and entry.key in intervals
               else {})
            | dict((post_processing or {}).get(entry.key, {})),
            **({"members": ensemble, "ensemble_sha256": ensemble_digest(
                [m["sha256"] for m in ensemble])} if ensemble else {}),
            **({"int8": entry_int8} if entry_int8 else {}),
            "training": training[entry.key],
            "evaluation": evaluation.get(entry.key, {}),
            "card": f"cards/{entry.name}.md",
        })
    intended_use = not_clinical(training_data) if training_data.get("emidec") else PHANTOM_ONLY
    return _clean({"schema_version": MANIFEST_SCHEMA, "version": version,
                   "intended_use": intended_use, "training_data": training_data,
                   "pipelines": pipelines(crop_rings), "models": models})


def _class_weights(classes: list[str], training: dict) -> str:
    weights = training.get("class_weights") or [training["foreground_weight"]] * (len(classes) - 1)
    return "weights " + ", ".join(f"{c} {w:g}" for c, w in zip(classes[1:], weights, strict=True))


def _threshold_text(model: dict) -> str:
    classes, threshold = model["output"]["classes"], model["output"]["threshold"]
    choice = model["training"].get("threshold_choice")
    if choice is None:
        return f"{threshold:g}"
    tried = ", ".join(f"{t}: {d:.3f}" for t, d in choice["validation_median_scar_dsc"].items())
    outer = "0.5 for the myocardium (scar included), " if "myocardium" in classes else ""
    inner = ", 0.5 for the MVO inside it" if "mvo" in classes else ""
    return (f"{outer}{threshold:g} for the scar{inner}, the threshold with the best mean over "
            f"source groups (phantoms, EMIDEC as acquired, EMIDEC darkened) of the median scar "
            f"DSC on the {choice['validation_series_with_scar']} validation series with "
            f"scar, through the service's post-processing ({tried})")


TERM_TEXT = {
    "rings": "the scar % measured in the myocardium U-Net's ring against the scar network's "
             "own myocardium (how much the two networks' myocardium disagree)",
    "myocardium": "the scar % with the myocardium drawn at probability 0.7 against 0.3",
    "scar": "the scar % with the scar threshold {offset:g} lower against {offset:g} higher",
}


def _interval_text(model: dict) -> str:
    cal = model["output"].get("interval")
    if not cal:
        return ""
    terms = cal.get("terms", ["scar"])
    spread = "; ".join(TERM_TEXT[t].format(offset=cal["offset"]) for t in terms)
    groups = ", ".join(f"{n} {g}" for g, n in (cal.get("groups") or {}).items())
    review = cal.get("review_width_percent")
    return (f"\n- The scar % comes with a {cal['level'] * 100:g} % interval: the scar % plus or "
            f"minus {cal['scale']:.2f} x (the spread + {cal['floor_percent']:g} points), the "
            f"spread being the sum of: {spread}. The scale is the largest of the "
            f"split-conformal quantiles of |error| / (spread + floor) in each calibration "
            f"group ({groups or str(cal['calibration_series']) + ' series'}; "
            f"`service/pipeline/uncertainty.py`)."
            + ("" if cal.get("unlike_scale") is None else
               f" A series whose contrast lies beyond the LGE the networks were trained on "
               f"(another centre's look) takes {cal['unlike_scale']:.2f} instead, the quantile "
               f"of {cal['unlike_series']} such series (the other-centre copies of the "
               f"held-out cases).")
            + ("" if review is None else
               f" An interval wider than {review:.1f} points sends the result to review"
               + review_choice_text(cal.get("review_choice")) + "."))


def _averaging_text(training: dict) -> str:
    momentum = training.get("ema_momentum")
    if momentum is None:
        return ""
    return (f"; the weights validated and shipped are the exponential moving average of the "
            f"training weights (momentum {momentum:g}), not the last step's")


def _obstruction_text(training: dict, training_data: dict) -> str:
    natural = training_data.get("obstruction_probability")
    trained = training.get("train_obstruction_probability", natural)
    if natural is None:
        return ""
    deep = "of deep (over 60 % transmural) scars"
    if trained == natural:
        return (f"\nMicrovascular obstruction in {natural * 100:g} % {deep}, the "
                f"phantoms'\nnatural mix.")
    return (f"\nIts training series (not its validation series) are drawn again with "
            f"microvascular\nobstruction in {trained * 100:g} % {deep} instead of the natural\n"
            f"{natural * 100:g} %: the same hearts and scars, more of them with a dark core, "
            f"which it\notherwise learned to leave to the blood pool.")


def _training_data_text(training_data: dict) -> str:
    real = training_data.get("emidec")
    text = (f"{training_data['description']}\n\nPhantoms: train {training_data['train_series']} "
            f"series / validation {training_data['validation_series']} series (split by "
            f"series, never by slice), seed {training_data['train_seed']}.")
    if real and real.get("cross_validation"):
        low, high = real["train_spacing_range_mm"]
        cv = real["cross_validation"]
        text += (f" EMIDEC: the {cv['cases']} `train` + `validation` cases in {cv['folds']} "
                 f"folds by patient (`{cv['file']}`), each fold's networks trained on the "
                 f"other folds' cases, each as acquired (bright-blood) and darkened "
                 f"(dark-blood look), {real['copies_per_case_and_contrast']} copies per "
                 f"contrast at nominal pixel spacings drawn from {low:g}-{high:g} mm (the files "
                 f"carry none). The thresholds, the ring constraint and the interval were "
                 f"chosen on the out-of-fold predictions of all {cv['cases']} cases in both "
                 f"contrasts (each case by the fold that never saw it) with the phantom "
                 f"validation series. Contrasts trained on: "
                 f"{', '.join(training_data['contrasts'])}.")
    elif real:
        low, high = real["train_spacing_range_mm"]
        text += (f" EMIDEC: the {real['train_cases']} `train` cases, each as acquired "
                 f"(bright-blood) and darkened (dark-blood look), "
                 f"{real['copies_per_case_and_contrast']} copies per contrast, each copy at a "
                 f"nominal pixel spacing drawn from {low:g}-{high:g} mm (the files carry none); "
                 f"the {real['validation_cases']} `validation` cases in both contrasts chose "
                 f"the best epoch and the threshold together with the phantom validation "
                 f"series. Contrasts trained on: {', '.join(training_data['contrasts'])}.")
    return text


def _evaluation_text(training_data: dict) -> str:
    text = (f"Held-out phantoms: seed {training_data['test_seed']}, "
            f"{training_data['test_series']} series.")
    real = training_data.get("emidec")
    if real:
        text += (f" EMIDEC `test`: {real['test_cases']} cases, bright-blood as acquired and "
                 f"darkened, read at a nominal {real['nominal_spacing_mm']:g} mm.")
    return text


def _known_limits(training_data: dict) -> str:
    real = training_data.get("emidec")
    limits = []
    if real:
        limits += [
            "- Real data from one centre only (EMIDEC, Dijon): other vendors, field strengths, "
            "sequences and populations are not represented in training; measure before "
            "trusting it on them.",
            "- EMIDEC's pixel spacing is unknown (zero-padded 256x256 PNGs; 1.25-2 mm "
            "reported): the networks saw it at drawn nominal spacings, so mm-based figures "
            "(volumes, masses) learnt from it are only as good as that guess; EMIDEC's "
            "intensities are 8-bit and windowed.",
            "- Real dark-blood anatomy is seen only through darkened EMIDEC: the LV cavity is "
            "brought to the level of normal myocardium, but the right ventricle has no label "
            "and stays bright, and the darkening keeps bright-blood partial volume at the "
            "endocardial border. No real dark-blood LGE was trained or evaluated on.",
            "- Non-ischaemic patterns (mid-wall, epicardial) are absent from EMIDEC (infarcts "
            "only) and from the phantoms.",
        ]
    else:
        limits += [
            "- Phantoms are not patients: real anatomy, motion, arrhythmia, implants, poor "
            "nulling, non-ischaemic patterns (mid-wall, epicardial) and other vendors' contrast "
            "are not represented; expect lower accuracy on real images until validated on them.",
            "- Short-axis dark-blood LGE only; no long-axis views, no bright-blood LGE.",
        ]
    limits += [
        "- Short-axis stacks only; no long-axis views. Phantom stacks of 6-14 slices and "
        "1.2-2.0 mm pixels were seen in training; other geometries are resampled. "
        "`models/STRESS.md` measures the cascade on development phantoms changed beyond the "
        "training ranges; `python -m training.studies.stress` makes it again for new models.",
        "- Microvascular obstruction (a dark core in transmural scar) is dark like remote "
        "myocardium and, in dark-blood LGE, like the blood pool. It is learned as a class of "
        "its own (EMIDEC's label 4 and the phantoms' cores) and reported inside the scar, "
        "but it is small and rare: EVALUATION.md gives its DSC and how often it is called "
        "where there is none; check the core when it matters.",
        "- Small scars (under 2 % of the myocardium) are drawn poorly; read them with care.",
    ]
    return "\n".join(limits)


def model_card(model: dict, training_data: dict) -> str:
    t = model["training"]
    final_lr = t["learning_rate"] * t["final_learning_rate_fraction"]
    ev = model["evaluation"]
    figures = "\n".join(f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |"
                        for k, v in ev.items()) or "| (none) | |"
    spec = model["input"]["preprocessing"] | {"name": model["input"]["name"],
                                              "shape": model["input"]["shape"]}
    channel_names = InputSpec.from_dict(model["input"]["preprocessing"]).channel_names
    extras = ", ".join(
        (["multiplied by the myocardium mask"] if spec["masked"] else [])
        + [f"channel {k} = {text}" for k, text in enumerate(channel_names[1:], start=2)])
    intended = ("dark-blood and bright-blood" if training_data.get("emidec") else "dark-blood")
    real_rows = ""
    if "train_slices_emidec" in t:
        real_rows = (f" Training slices {t['train_slices']} ({t['train_slices_emidec']} of them "
                     f"EMIDEC), validation slices {t['val_slices']} "
                     f"({t['val_slices_emidec']} EMIDEC).")
    return f"""# Model card: {model['name']} {model['version']}

**{not_clinical(training_data) if training_data.get("emidec") else PHANTOM_ONLY}**

## What it does
{model['purpose']}

Architecture: {model['architecture']} ({model['parameters']:,} parameters), after {model['paper']}
in `shared/seeds/`. {_files_text(model)}{_int8_text(model)}

## Input and output
- Input `{spec['name']}`: float32 {spec['shape']} (batch, rows, columns, channels); crop
  `{spec['crop']}`{f", {spec['spacing_mm']} mm pixels" if spec.get('spacing_mm') else ""}
  {extras}; {spec['normalisation']}.
  Cut by `service.pipeline.preprocess.model_inputs`, the same code in training and serving.
- Output `probabilities`: softmax over {', '.join(model['output']['classes'])}; mapped back to
  the source pixel grid by the inverse of the crop and thresholded at
  {_threshold_text(model)}.{_interval_text(model)}

## Intended use
Research and engineering of the LGE scar service: segmenting the LV myocardium and scar on
{intended} late-gadolinium-enhancement short-axis stacks, to be read by a cardiac imager
who checks every contour. Not a medical device.

## Training data
{_training_data_text(training_data)}{_obstruction_text(t, training_data)}

Training: {t['epochs']} epochs x {t['steps_per_epoch']} steps, batch {t['batch_size']}, Adam
{t['learning_rate']:g} decaying exponentially to {final_lr:g}
(the paper's 5e-4 was too slow for a budget of minutes, see `training/train.py`), L2 weight
decay 2e-4, cross-entropy ({_class_weights(model['output']['classes'], t)}) + soft Dice, the
7 flips/rotations + intensity + elastic augmentation, half the inputs as another site's
scanner might give them (bias field, blur, window clipping, quantisation), computed in
{t.get('precision', 'float32')}; {_kept_epoch_text(t)}{_averaging_text(t)},
{t['minutes']:.1f} min on 2 CPU cores.{real_rows} Why these choices: `docs/training.md`.

## Evaluation
{_evaluation_text(training_data)}

| figure | value |
|---|---|
{figures}

Full results per test set with 95 % intervals, box plots, Bland-Altman plots and the
statistical comparisons: `models/EVALUATION.md`.

## Known limits
{_known_limits(training_data)}
"""


def _files_text(model: dict) -> str:
    members = model.get("members")
    if not members:
        return f"File `{model['file']}`, sha256 `{model['sha256']}`."
    files = ", ".join(f"`{m['file']}` (fold {m['fold']}, sha256 `{m['sha256'][:16]}…`)"
                      for m in members)
    return (f"An ensemble of {len(members)} networks, one per cross-validation fold, whose "
            f"class probabilities the service averages: {files}; the ensemble's digest "
            f"(sha256 of the members' sha256s, as the reports name it) "
            f"`{model['ensemble_sha256']}`."
            + (" Its myocardium is completed into a left-ventricular ring "
               "(`service/pipeline/shape.py`)." if model["output"].get("complete_ring") else "")
            + _fused_text(model.get("training") or {}))


def _fused_text(training: dict) -> str:
    fused = training.get("prelus_fused")
    return "" if not fused else (
        f" Each member's {fused} PReLUs, which the exporter writes as five nodes each, are "
        f"fused into ONNX's `PRelu` (`training/onnx_graph.py`): the same answers, a session "
        f"made faster (`benchmarks/results/enet_sessions.json`).")


def _kept_epoch_text(t: dict) -> str:
    folds = t.get("cross_validation")
    if not folds:
        return (f"best epoch by validation DSC ({t['best_epoch']}, DSC "
                f"{t['best_val_dsc']:.3f} on the model grid)")
    dsc = ", ".join(f"{f['held_out_val_dsc']:.3f}" for f in folds)
    return (f"the last epoch kept in each of the {len(folds)} folds (their held-out cases "
            f"give the out-of-fold figures, so they do not pick the weights); held-out "
            f"validation DSC on the model grid {dsc}")


def _int8_text(model: dict) -> str:
    int8 = model.get("int8")
    if not int8:
        return ""
    pipelines = int8.get("pipelines") or []
    default = ("the default (`MODEL_PRECISION=auto`): it held accuracy on every test set"
               if int8.get("default") else
               f"the default (`MODEL_PRECISION=auto`) in {', '.join(pipelines)}, where it held "
               "accuracy on every test set; the other pipelines run the float32 file"
               if pipelines else
               "run only with `MODEL_PRECISION=int8`: it did not hold accuracy on every test set")
    copies = (f"`{int8['file']}` (sha256 `{int8['sha256']}`; " if "file" in int8 else
              "each member's copy (the manifest's `members`, each with its file and sha256; ")
    return (f"\nAlso as static int8, {copies}{int8['calibration']}), {default} "
            "(`models/EVALUATION.md`, \"int8 against float32\").")


def write_models_dir(models_dir: Path, manifest: dict, onnx_files: Mapping[str, Path],
                     evaluation_md: str, figures: Mapping[str, Path]) -> None:
    """Replace the released files in ``models_dir`` (README.md is kept)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    for old in models_dir.glob("*.onnx"):
        old.unlink()
    for path in onnx_files.values():
        shutil.copy2(path, models_dir / path.name)
    (models_dir / "cards").mkdir(exist_ok=True)
    for model in manifest["models"]:
        (models_dir / model["card"]).write_text(model_card(model, manifest["training_data"]))
    (models_dir / "evaluation").mkdir(exist_ok=True)
    for old in (models_dir / "evaluation").glob("*.png"):  # figures of an earlier release
        old.unlink()
    for name, path in figures.items():
        shutil.copy2(path, models_dir / "evaluation" / name)
    (models_dir / "EVALUATION.md").write_text(evaluation_md)
    tmp = models_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(models_dir / "manifest.json")


def rewrite_cards(models_dir: Path) -> None:
    """The cards and the manifest's intended use again from the manifest, with this code's
    texts (after a change to the card template; the figures are the manifest's)."""
    path = Path(models_dir) / "manifest.json"
    manifest = json.loads(path.read_text())
    if manifest["training_data"].get("emidec"):
        manifest["intended_use"] = not_clinical(manifest["training_data"])
    for model in manifest["models"]:
        (Path(models_dir) / model["card"]).write_text(model_card(model,
                                                                  manifest["training_data"]))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    import sys

    rewrite_cards(Path(sys.argv[1] if len(sys.argv) > 1 else "models"))

