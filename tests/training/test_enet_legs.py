"""Round 4's ENet legs: placed after each fold's U-Nets without moving a kept leg, and one
trained, exported and scored through its pipeline end to end on tiny data."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import shipped_onnx
from training import legs
from training.crossval import ENET_TASKS, FOLD_TASKS
from training.fold_legs import BOX_STAGE, FOLD_EPOCHS, STAGES, FoldLegTrainer, Pool, plan

MODELS = Path(__file__).parents[2] / "models"


def _configs() -> dict:
    from training.run import CONFIGS, task_config

    return {task: task_config(task) for task in CONFIGS}


def test_enet_legs_come_after_each_folds_unets_and_move_no_unet_leg() -> None:
    configs = _configs()
    full = plan(configs)
    unets_only = plan(configs, stages={"myocardium_unet": 4, "scar_unet": 2})
    # The U-Nets' legs (every kept one among them) are the same legs in the same order.
    assert [leg for leg in full if leg.task in FOLD_TASKS] == unets_only
    names = [leg.name for leg in full]
    for fold in range(5):
        last_unet = "fold0-scar_unet-w32" if fold == 0 else f"fold{fold}-scar_unet-s2"
        at = names.index(last_unet)
        assert names[at + 1:at + 7] == [f"fold{fold}-enet_p2", f"fold{fold}-enet_p2-s2",
                                        f"fold{fold}-enet_p2-s3", f"fold{fold}-enet_p1",
                                        f"fold{fold}-enet_p1-s2", f"fold{fold}-enet_p1-s3"]
        # Only the capacity study's later stages (after every fold) come after them.
        assert all(not n.startswith(f"fold{fold}-") or "-w32-" in n for n in names[at + 7:])
        for task in ENET_TASKS:
            leg = full[names.index(f"fold{fold}-{task}")]
            assert leg.uses == (f"fold{fold}-myocardium_unet-s{BOX_STAGE}",)
            assert leg.needs == leg.uses and leg.stage == 1
            cfg = leg.config
            assert cfg.epochs == FOLD_EPOCHS[task] and cfg.epochs * cfg.steps_per_epoch == 5000
            assert not cfg.select_best and cfg.ema_momentum is not None
            # A curve for the flatness test: a few points in each of the tenths it compares.
            assert 5000 // (cfg.validate_every * cfg.steps_per_epoch) >= 20
            # The second stage goes on from the first's weights at the learning rate the
            # first ended at, warmed up: no restart.
            second = full[names.index(f"fold{fold}-{task}-s2")]
            assert second.previous == leg.name and second.uses == leg.uses
            assert second.config.learning_rate == pytest.approx(
                cfg.learning_rate * cfg.final_learning_rate_fraction)
            assert second.config.warmup_steps > 0 and second.config.epochs == cfg.epochs
            # The third goes on where the second ended, in the same way.
            third = full[names.index(f"fold{fold}-{task}-s3")]
            assert third.previous == second.name and third.uses == leg.uses
            assert third.config.learning_rate == pytest.approx(
                second.config.learning_rate * cfg.final_learning_rate_fraction)
    assert len(full) == len(unets_only) + 5 * 2 * STAGES["enet_p2"]


@pytest.mark.slow
def test_an_enet_leg_trains_exports_and_scores_its_pipeline(
        tmp_path: Path, series_dirs: list[Path]) -> None:
    pytest.importorskip("tensorflow")
    from training.data.sources import PhantomSource
    from training.run import build_network

    root, work = tmp_path / "legs", tmp_path / "work"
    # The fold's myocardium leg: the shipped myocardium U-Net stands in for it.
    ring_leg = f"fold0-myocardium_unet-s{BOX_STAGE}"
    (root / ring_leg).mkdir(parents=True)
    shutil.copy2(shipped_onnx("myocardium-unet"), root / ring_leg / legs.ONNX_FILE)
    sources = tuple(PhantomSource(d) for d in series_dirs[:5])
    # Case "a" is fold 0's: held out as given (series 2) and shifted (series 3).
    pool = Pool(sources, (None, None, "a", "a", "b"),
                ("train", "train", "as-given", "shifted", "train"))
    trainer = FoldLegTrainer(pool, {"a": 0, "b": 1}, work, build_network, {}, root,
                             workers=1)
    assert not trainer.shared_specs["enet_p2"].hough_near_heart, "0.3.2's ENets: whole slice"
    leg = next(leg for leg in plan(_configs(), folds=1) if leg.task == "enet_p2")
    leg = dataclasses.replace(leg, config=dataclasses.replace(
        leg.config, epochs=2, steps_per_epoch=2, batch_size=4, validate_every=1))
    trainer.plan = [leg]
    record = trainer(leg)
    assert legs.finished(leg, root) is not None and record["task"] == "enet_p2"
    # Both ENets' arrays were cut in one pass over the whole pool.
    assert len(list((work / "arrays").glob("pool_enet_p*.npz"))) == 2
    assert [h["steps"] for h in record["history"]] == [2, 4]
    assert all(h["val_dsc_shifted"] is not None for h in record["history"])
    rows = (root / leg.name / "held_out_scores.csv").read_text().splitlines()
    assert rows[0].startswith("series,kind,contrast,method,myocardium_dsc,scar_dsc")
    assert [r.split(",")[1:4:2] for r in rows[1:]] == [["as-given", "enet"],
                                                      ["shifted", "enet"]]
    held = record["held_out"]
    assert set(held) == {"as-given enet", "shifted enet"}
    # The pipeline's myocardium is the fold's first ring: the shipped U-Net's on a phantom.
    assert held["as-given enet"]["myocardium_dsc"] > 0.6
    assert "as-given enet myocardium" in record["summary"]
    assert json.loads((root / leg.name / legs.LEG_FILE).read_text())["uses"] == [ring_leg]
