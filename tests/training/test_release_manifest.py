"""The manifest the release writes is the one the service reads: an int8 fold ensemble."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from service.config import REPO_ROOT
from service.pipeline.infer import OnnxModel
from service.pipeline.preprocess import InputSpec
from service.pipeline.registry import (
    ensemble_digest,
    load_registry,
    representative_int8_file,
    sha256_of,
)
from tests.service.pipeline.test_ensemble import tiny_network
from training.release import MODELS, build_manifest, model_card, write_models_dir

SHIPPED = REPO_ROOT / "models"


def test_a_released_fold_ensemble_with_int8_members_is_served_as_the_release_decided(
        tmp_path: Path) -> None:
    """Each member's int8 copy is written into its member; the service runs them in the
    pipeline where int8 held and the float32 members elsewhere; the card names them."""
    released = json.loads((SHIPPED / "manifest.json").read_text())
    entries = {m["name"]: m for m in released["models"]}
    by_key = {model.key: entries[model.name] for model in MODELS}
    onnx_files = {key: SHIPPED / entry["file"] for key, entry in by_key.items()}
    scar = by_key["scar_unet"]
    side, channels = scar["input"]["shape"][1], scar["input"]["shape"][3]
    classes = len(scar["output"]["classes"])
    rng = np.random.default_rng(4)
    export = tmp_path / "export"
    export.mkdir()
    members = [tiny_network(export / f"scar-unet-fold{k}.onnx",
                            rng.normal(size=(channels, classes)), side, channels)
               for k in range(3)]
    copies = [tiny_network(export / f"scar-unet-fold{k}-int8.onnx",
                           rng.normal(size=(channels, classes)), side, channels)
              for k in range(3)]
    onnx_files["scar_unet"] = members[0]
    int8 = {"scar_unet": {"default": False, "pipelines": ["cascade-unet"],
                          "members": [{"file": p.name, "sha256": sha256_of(p)} for p in copies],
                          "calibration": "test rows"}}
    manifest = build_manifest(
        "9.9.9", onnx_files,
        {key: InputSpec.from_dict(e["input"]["preprocessing"]) for key, e in by_key.items()},
        {key: e["parameters"] for key, e in by_key.items()},
        {key: e["training"] for key, e in by_key.items()}, {}, released["training_data"],
        {key: 0.5 for key in by_key}, None, int8, {"scar_unet": members})
    files = ({f"{key}": path for key, path in onnx_files.items()}
             | {f"scar_unet fold {k}": p for k, p in enumerate(members)}
             | {f"scar_unet fold {k} int8": p for k, p in enumerate(copies)})
    models_dir = tmp_path / "models"
    write_models_dir(models_dir, manifest, files, "# evaluation\n", {})

    entry = next(m for m in manifest["models"] if m["name"] == "scar-unet")
    assert [m["int8"]["file"] for m in entry["members"]] == [p.name for p in copies]
    assert "members" not in entry["int8"] and entry["int8"]["pipelines"] == ["cascade-unet"]
    assert "each member's copy" in model_card(entry, manifest["training_data"])
    assert representative_int8_file(entry) == copies[0].name  # what the benchmarks time

    registry = load_registry(models_dir, "cpu")
    x = rng.random((2, side, side, channels)).astype(np.float32)
    in_cascade = registry.pipelines["cascade-unet"].scar
    assert in_cascade.precision == "int8"
    assert in_cascade.sha256 == ensemble_digest([sha256_of(p) for p in copies])
    assert np.allclose(in_cascade.network.predict(x),
                       np.mean([OnnxModel(p)(x) for p in copies], axis=0), atol=1e-6)
    assert registry.models["scar-unet"].precision == "fp32"
    assert np.allclose(registry.models["scar-unet"].network.predict(x),
                       np.mean([OnnxModel(p)(x) for p in members], axis=0), atol=1e-6)
    shutil.rmtree(export)  # the models folder holds every file it names
    load_registry(models_dir, "cpu")


def test_every_member_is_quantised_once_and_a_network_without_inputs_is_not(
        tmp_path: Path) -> None:
    from training.quantize import quantised_members

    rng = np.random.default_rng(5)
    members = {"scar_unet": [tiny_network(tmp_path / f"scar-fold{k}.onnx",
                                          rng.normal(size=(2, 3)), 8, 2) for k in range(2)],
               "myocardium_unet": [tiny_network(tmp_path / "myo-fold0.onnx",
                                                rng.normal(size=(2, 3)), 8, 2)]}
    rows = {"scar_unet": rng.normal(size=(20, 8, 8, 2)).astype(np.float32)}
    copies = quantised_members(members, rows, ("myocardium_unet", "scar_unet"))
    assert list(copies) == ["scar_unet"]  # no inputs for the myocardium U-Net: no copies
    assert [p.name for p in copies["scar_unet"]] == ["scar-fold0-int8.onnx",
                                                     "scar-fold1-int8.onnx"]
    x = rng.normal(size=(3, 8, 8, 2)).astype(np.float32)
    for fp32, int8 in zip(members["scar_unet"], copies["scar_unet"], strict=True):
        assert sha256_of(fp32) != sha256_of(int8)
        assert np.abs(OnnxModel(fp32)(x) - OnnxModel(int8)(x)).max() < 0.1  # the same map
    written = [p.stat().st_mtime_ns for p in copies["scar_unet"]]
    quantised_members(members, rows, ("scar_unet",))  # a resumed release: kept, not redone
    assert [p.stat().st_mtime_ns for p in copies["scar_unet"]] == written


def _summary(myocardium: float, scar: float) -> dict:
    return {"emidec": {"methods": {"cascade-unet": {"myocardium_dsc": {"median": myocardium},
                                                    "scar_dsc": {"median": scar}}}}}


def test_the_ship_rule_ships_only_a_release_not_below_the_shipped_one_on_test() -> None:
    from training.publish import ship_decision, ship_text

    shipped = _summary(0.799, 0.508)
    better = ship_decision(_summary(0.85, 0.60), shipped)
    assert better["ships"] and "it replaces it" in ship_text(better, "0.3.2")
    tied = ship_decision(_summary(0.799, 0.508), shipped)
    assert tied["ships"], "not below is enough"
    worse_scar = ship_decision(_summary(0.85, 0.50), shipped)
    assert not worse_scar["ships"]
    text = ship_text(worse_scar, "0.3.2")
    assert "not shipped" in text and "scar dsc 0.500 against 0.508" in text
    assert not ship_decision(_summary(0.79, 0.60), shipped)["ships"]
    # Nothing shipped with EMIDEC `test` (a first release, or phantoms only): it ships.
    assert ship_decision(_summary(0.5, 0.1), None)["ships"]
    assert ship_decision(_summary(0.5, 0.1), {"phantoms": {}})["ships"]
    assert ship_text(ship_decision(_summary(0.5, 0.1), None), None) == ""


def test_the_shipped_release_is_compared_with_its_own_test_summary() -> None:
    """models/ carries the summary the rule reads: EMIDEC `test` medians of the cascade."""
    from training.publish import SHIP_FIGURES, SHIP_METHOD, SHIP_SET, ship_decision

    models = Path(__file__).resolve().parents[2] / "models"
    summary = json.loads((models / "evaluation" / "summary.json").read_text())
    assert all(summary[SHIP_SET]["methods"][SHIP_METHOD][f]["median"] > 0 for f in SHIP_FIGURES)
    assert ship_decision(summary, summary)["ships"]
