"""The release's out-of-fold machinery takes each fold's own ENets where their legs are kept
in every fold, and the earlier release's (with that release's input) where not."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from service.pipeline.ensemble import MeanOfModels
from service.pipeline.infer import OnnxModel
from service.pipeline.segment import Network
from tests.conftest import shipped_onnx
from training import crossval
from training.data.dataset import CLASSES, TASKS

MODELS = Path(__file__).parents[2] / "models"
FILES = {task: shipped_onnx(task.replace("_", "-"))
         for task in ("myocardium_unet", "scar_unet", "enet_p2", "enet_p1")}


def test_the_enets_are_the_folds_own_only_where_every_fold_has_them() -> None:
    unets = {"myocardium_unet": {}, "scar_unet": {}}
    assert crossval.fold_trained({0: unets, 1: unets}) == crossval.FOLD_TASKS
    both = unets | {"enet_p2": {}, "enet_p1": {}}
    assert crossval.fold_trained({0: both, 1: both}) == (*crossval.FOLD_TASKS, "enet_p2",
                                                         "enet_p1")
    # A fold without its Protocol 2 leg: that ENet is shared for every fold.
    assert crossval.fold_trained({0: both, 1: unets | {"enet_p1": {}}}) == (
        *crossval.FOLD_TASKS, "enet_p1")


def test_fold_networks_and_the_ensemble_take_own_enets_and_keep_shared_ones_as_released(
        ) -> None:
    whole = dataclasses.replace(TASKS["enet_p1"], hough_near_heart=False)
    shared = {"enet_p1": Network(OnnxModel(FILES["enet_p1"]), whole, CLASSES["enet_p1"]),
              "enet_p2": Network(OnnxModel(FILES["enet_p2"]), whole, CLASSES["enet_p2"])}
    own = [{task: FILES[task] for task in ("myocardium_unet", "scar_unet", "enet_p2")}
           for _ in range(2)]
    per_fold = crossval.fold_networks(own, shared)
    for nets in per_fold:
        assert set(nets) == set(FILES)
        assert nets["enet_p2"] is not shared["enet_p2"] and nets["enet_p2"].spec.hough_near_heart
        assert nets["enet_p1"] is shared["enet_p1"] and not nets["enet_p1"].spec.hough_near_heart
    ensemble = crossval.ensemble_networks(per_fold, (*crossval.FOLD_TASKS, "enet_p2"))
    for task in ("scar_unet", "enet_p2"):
        assert isinstance(ensemble[task].predict, MeanOfModels)
    # One myocardium U-Net ships (the latency budget): fold 0's own.
    assert ensemble["myocardium_unet"] is per_fold[0]["myocardium_unet"]
    assert ensemble["enet_p1"] is shared["enet_p1"]


def test_the_ensemble_ships_the_first_folds_the_budget_holds() -> None:
    per_fold = [{task: Network(lambda x, f=fold: x + f, TASKS[task], CLASSES[task])
                 for task in (*crossval.FOLD_TASKS, "enet_p2")} for fold in range(5)]
    ensemble = crossval.ensemble_networks(per_fold, (*crossval.FOLD_TASKS, "enet_p2"))
    shipped = {task: [next(f for f in range(5) if m is per_fold[f][task].predict)
                      for m in ensemble[task].predict.members]
               for task in ("scar_unet", "enet_p2")}
    assert shipped == {"scar_unet": list(range(crossval.SHIPPED_MEMBERS["scar_unet"])),
                       "enet_p2": [0, 1, 2, 3, 4]}
    assert crossval.SHIPPED_MEMBERS["myocardium_unet"] == 1
    assert ensemble["myocardium_unet"] is per_fold[0]["myocardium_unet"]
    assert [crossval.shipped_folds("scar_unet", n) for n in (1, 2, 5)] == [1, 2, 2]


def test_shared_enets_carry_their_manifests_input(tmp_path: Path) -> None:
    from training.run import _shared_networks

    files, parameters, training, specs = _shared_networks(MODELS, tmp_path / "shipped")
    assert set(files) == set(parameters) == set(training) == set(specs) == set(
        crossval.ENET_TASKS)
    # The shipped ENets (0.4.0) were trained on the search near the heart.
    assert all(spec.hough_near_heart for spec in specs.values())
    assert specs["enet_p2"].masked and not specs["enet_p1"].masked
    # A manifest written before the field (0.3.2's): the whole slice's Hough search, whatever
    # today's training spec says.
    older = tmp_path / "models"
    shutil.copytree(MODELS, older)
    manifest = json.loads((MODELS / "manifest.json").read_text())
    for entry in manifest["models"]:
        entry["input"]["preprocessing"].pop("hough_near_heart", None)
    (older / "manifest.json").write_text(json.dumps(manifest))
    _, _, _, specs = _shared_networks(older, tmp_path / "older")
    assert all(not spec.hough_near_heart for spec in specs.values())
    assert all(TASKS[task].hough_near_heart for task in specs)
