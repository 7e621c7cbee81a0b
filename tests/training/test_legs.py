"""A release built in legs: a killed leg resumes, a finished one is never trained again."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from training import legs

pytest.importorskip("tensorflow")

from tests.training.test_training import _tiny_data, _tiny_unet  # noqa: E402
from training.train import TrainConfig, train  # noqa: E402


class Stop(Exception):
    """Stands for the process being killed."""


class TinyLegTrainer:
    """Trains a leg as the release does (resumable run under WORK, then the kept folder)."""

    def __init__(self, work: Path, root: Path, kill_at_epoch: int | None = None) -> None:
        self.work, self.root, self.kill_at_epoch = work, root, kill_at_epoch
        self.calls: list[str] = []

    def __call__(self, leg: legs.Leg) -> dict:
        self.calls.append(leg.name)
        data = _tiny_data()
        config = leg.config
        if self.kill_at_epoch is not None:
            # Train up to the kill, then "die": the run's state stays under WORK only.
            partial = TrainConfig(**{**leg.config.__dict__, "epochs": self.kill_at_epoch})
            train(_tiny_unet, data, data, partial, self.work / leg.name, leg.name)
            raise Stop
        model, state = train(_tiny_unet, data, data, config, self.work / leg.name, leg.name)
        folder = legs.leg_dir(leg, self.root)
        folder.mkdir(parents=True, exist_ok=True)
        model.save_weights(folder / legs.WEIGHTS_FILE)
        return legs.record_leg(leg, folder, state.history, {"summary": "tiny"})


def _plan() -> list[legs.Leg]:
    config = TrainConfig(epochs=4, steps_per_epoch=2, batch_size=4, validate_every=2)
    return [legs.Leg("myocardium_unet", 0, config),
            legs.Leg("scar_unet", 0, config, uses=("fold0-myocardium_unet",)),
            legs.Leg("myocardium_unet", 1, config)]


def test_a_killed_leg_resumes_where_it_stopped(tmp_path: Path) -> None:
    root, work = tmp_path / "legs", tmp_path / "work"
    plan = _plan()[:1]
    with pytest.raises(Stop):
        legs.run_legs(plan, TinyLegTrainer(work, root, kill_at_epoch=2), root)
    assert legs.pending(plan, root) == plan, "a half-trained leg is not finished"
    trainer = TinyLegTrainer(work, root)
    assert legs.run_legs(plan, trainer, root) == [plan[0].name]
    record = legs.finished(plan[0], root)
    # Epochs 1-2 come from the killed run, 3-4 from the resumed one: 4 in all, not 6.
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3, 4]
    assert [h["steps"] for h in record["history"]] == [2, 4, 6, 8]


def test_finished_legs_are_skipped_after_a_fresh_clone_and_checked_by_sha256(
        tmp_path: Path) -> None:
    root, work = tmp_path / "legs", tmp_path / "work"
    plan = _plan()
    first = TinyLegTrainer(work, root)
    assert legs.run_legs(plan, first, root, max_legs=2) == [p.name for p in plan[:2]]
    assert legs.pending(plan, root) == plan[2:]
    # A fresh clone elsewhere: the kept folders only, no WORK.
    clone = tmp_path / "clone" / "legs"
    shutil.copytree(root, clone)
    second = TinyLegTrainer(tmp_path / "clone" / "work", clone)
    assert legs.run_legs(plan, second, clone) == [plan[2].name]
    assert second.calls == [plan[2].name], "finished legs are never trained again"
    # A kept file changed after the fact: that leg is no longer finished.
    weights = legs.leg_dir(plan[0], clone) / legs.WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert legs.pending(plan, clone) == plan[:1]


def test_a_scar_leg_waits_for_its_folds_myocardium_leg(tmp_path: Path) -> None:
    root = tmp_path / "legs"
    plan = _plan()
    messages: list[str] = []
    trainer = TinyLegTrainer(tmp_path / "work", root)
    done = legs.run_legs([plan[1]] + [plan[0]], trainer, root, max_legs=1, log=messages.append)
    assert done == [plan[0].name] and any("waits for fold0-myocardium_unet" in m
                                          for m in messages)


def test_flatness_is_the_gain_over_the_last_fifth() -> None:
    rising = [{"steps": s, "val_dsc": s / 1000} for s in range(100, 1001, 100)]
    flat = [{"steps": s, "val_dsc": 0.8 + (0.001 if s > 500 else 0.0)}
            for s in range(100, 1001, 100)]
    assert legs.flatness(rising)["flat"] is False
    assert legs.flatness(rising)["gain"] == pytest.approx(0.2)
    assert legs.flatness(flat)["flat"] is True
    assert legs.flatness(rising[:2])["flat"] is None


def test_a_later_stage_starts_from_the_earlier_stages_kept_weights(tmp_path: Path) -> None:
    first = TrainConfig(epochs=2, steps_per_epoch=2, batch_size=4)
    model, _ = train(_tiny_unet, _tiny_data(), _tiny_data(), first, tmp_path / "s1", "s1")
    model.save_weights(tmp_path / legs.WEIGHTS_FILE)
    # No learning at all in stage 2: its kernels are stage 1's, not a new initialisation.
    still = TrainConfig(epochs=1, steps_per_epoch=1, batch_size=4, learning_rate=0.0)
    second, _ = train(_tiny_unet, _tiny_data(), _tiny_data(), still, tmp_path / "s2", "s2",
                      initial_weights=tmp_path / legs.WEIGHTS_FILE)
    kernels = [w for w in model.weights if "kernel" in w.name]
    again = [w for w in second.weights if "kernel" in w.name]
    for a, b in zip(kernels, again, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_stages_and_their_curves_join_into_one_network() -> None:
    from training.fold_legs import joined_curves, last_stages, plan
    from training.run import CONFIGS, task_config

    legs_plan = plan({task: task_config(task) for task in CONFIGS}, folds=2,
                     stages={"myocardium_unet": 2, "scar_unet": 1})
    names = [leg.name for leg in legs_plan]
    assert names[:3] == ["fold0-myocardium_unet", "fold0-myocardium_unet-s2", "fold0-scar_unet"]
    scar = legs_plan[2]
    # The scar U-Net is cut and trained on its fold's last myocardium stage.
    assert scar.needs == ("fold0-myocardium_unet-s2",)
    assert legs_plan[1].needs == ("fold0-myocardium_unet",)
    assert legs_plan[1].config.learning_rate < legs_plan[0].config.learning_rate
    assert [leg.name for leg in last_stages(legs_plan)][:2] == ["fold0-myocardium_unet-s2",
                                                                "fold0-scar_unet"]
    one = [{"steps": 100, "seconds": 10.0, "val_dsc": 0.5},
           {"steps": 200, "seconds": 20.0, "val_dsc": 0.6}]
    two = [{"steps": 100, "seconds": 12.0, "val_dsc": 0.7}]
    assert [(h["steps"], h["seconds"]) for h in joined_curves([one, two])] == [
        (100, 10.0), (200, 20.0), (300, 32.0)]


def test_the_fourth_stage_goes_on_where_the_third_ended_and_the_box_stays_at_the_third(
) -> None:
    from training.fold_legs import BOX_STAGE, WARMUP_STEPS, plan
    from training.run import CONFIGS, task_config

    by_name = {leg.name: leg for leg in plan({task: task_config(task) for task in CONFIGS})}
    third, fourth = by_name["fold0-myocardium_unet-s3"], by_name["fold0-myocardium_unet-s4"]
    assert fourth.needs == (third.name,)
    ended = third.config.learning_rate * third.config.final_learning_rate_fraction
    assert fourth.config.learning_rate == pytest.approx(ended)
    assert (third.config.warmup_steps, fourth.config.warmup_steps) == (0, WARMUP_STEPS)
    for fold in range(5):
        assert by_name[f"fold{fold}-scar_unet"].uses == (
            f"fold{fold}-myocardium_unet-s{BOX_STAGE}",)
    # The scar U-Net's second stage goes on where its first (no restart) ended.
    scar, scar2 = by_name["fold0-scar_unet"], by_name["fold0-scar_unet-s2"]
    assert set(scar2.needs) == {scar.name, *scar.uses}
    assert scar2.config.learning_rate == pytest.approx(
        scar.config.learning_rate * scar.config.final_learning_rate_fraction)
    assert scar2.config.warmup_steps == WARMUP_STEPS


def test_the_capacity_study_goes_on_last_as_a_warm_restart_and_holds_no_release_back(
) -> None:
    from training.fold_legs import BOX_STAGE, plan, release_legs
    from training.run import CONFIGS, task_config

    legs_plan = plan({task: task_config(task) for task in CONFIGS})
    first, second, third = (next(leg for leg in legs_plan if leg.name == name)
                            for name in ("fold0-scar_unet-w32", "fold0-scar_unet-w32-s2",
                                         "fold0-scar_unet-w32-s3"))
    assert legs_plan[-2:] == [second, third]
    assert set(second.needs) == {first.name, f"fold0-myocardium_unet-s{BOX_STAGE}"}
    assert second.config.base_filters == third.config.base_filters == 32
    # A warm restart: a quarter of the first stage's learning rate, not where it ended.
    assert second.config.learning_rate == pytest.approx(first.config.learning_rate / 4)
    assert second.config.epochs == 2 * first.config.epochs
    # Then on where the second ended, warmed up.
    assert third.config.learning_rate == pytest.approx(
        second.config.learning_rate * second.config.final_learning_rate_fraction)
    assert third.config.warmup_steps > 0 and third.needs[-1] == second.name
    release = release_legs(legs_plan)
    assert not {first, second, third} & set(release)
    assert len(release) == len(legs_plan) - 3


def test_the_last_folds_stop_their_myocardium_u_net_at_the_box_stage() -> None:
    from training.fold_legs import BOX_STAGE, LAST_STAGE_BY_FOLD, last_stages, plan
    from training.run import CONFIGS, task_config

    legs_plan = plan({task: task_config(task) for task in CONFIGS})
    last = {leg.network: leg for leg in last_stages(legs_plan)}
    for fold in range(5):
        stage = last[f"fold{fold}-myocardium_unet"].stage
        assert stage == (BOX_STAGE if fold in LAST_STAGE_BY_FOLD else 4)
        # Every fold's scar U-Net and ENets still take the box stage's ring.
        for task in ("scar_unet", "enet_p2", "enet_p1"):
            assert last[f"fold{fold}-{task}"].uses == (
                f"fold{fold}-myocardium_unet-s{BOX_STAGE}",)
    names = {leg.name for leg in legs_plan}
    assert {f"fold{f}-myocardium_unet-s4" for f in range(5)} & names == {
        f"fold{f}-myocardium_unet-s4" for f in range(5) if f not in LAST_STAGE_BY_FOLD}


def test_a_kept_leg_matches_a_config_that_gained_a_field_at_its_default() -> None:
    from dataclasses import asdict

    config = TrainConfig(epochs=4)
    recorded = asdict(config)
    del recorded["warmup_steps"]  # kept before the field existed
    assert legs.config_matches(recorded, config)
    assert not legs.config_matches(recorded, TrainConfig(epochs=4, warmup_steps=10))
    assert not legs.config_matches(recorded | {"epochs": 5}, config)
    assert not legs.config_matches(recorded | {"gone": 1}, config)
    assert not legs.config_matches(None, config)


def test_every_kept_leg_is_finished_under_todays_plan() -> None:
    """A change of the plan must never silently un-finish legs already kept in git."""
    from training.fold_legs import plan
    from training.run import CONFIGS, task_config

    by_name = {leg.name: leg for leg in plan({task: task_config(task) for task in CONFIGS})}
    kept = sorted(p.parent.name for p in legs.LEGS_ROOT.glob(f"*/{legs.LEG_FILE}"))
    assert kept, "no kept legs found"
    for name in kept:
        assert name in by_name, f"{name} is kept but not in the plan"
        assert legs.finished(by_name[name]) is not None, f"{name} no longer counts as finished"


def test_a_warm_up_ramps_the_learning_rate_then_follows_the_decay() -> None:
    from training.train import learning_rate_schedule

    plain = learning_rate_schedule(TrainConfig(learning_rate=1e-3), 1000)
    warmed = learning_rate_schedule(TrainConfig(learning_rate=1e-3, warmup_steps=100), 1000)
    assert float(warmed(0)) == pytest.approx(float(plain(0)) / 100, rel=1e-5)
    assert float(warmed(49)) == pytest.approx(float(plain(49)) / 2, rel=1e-5)
    for step in (99, 100, 500, 999):
        assert float(warmed(step)) == pytest.approx(float(plain(step)), rel=1e-5)
    assert float(plain(1000)) == pytest.approx(1e-4, rel=1e-5)


def test_the_capacity_curves_are_compared_at_equal_compute() -> None:
    from training.studies.capacity_study import at_equal_compute, step_cost

    narrow = {"curve": [{"steps": s, "val_dsc": s / 10000, "val_dsc_shifted": s / 20000}
                        for s in (1000, 2000, 4000, 8000)]}
    wide = {"curve": [{"steps": 500, "val_dsc": 0.9, "val_dsc_shifted": 0.8},
                      {"steps": 1000, "val_dsc": 0.95, "val_dsc_shifted": 0.85},
                      {"steps": 3000, "val_dsc": 0.97, "val_dsc_shifted": 0.9}]}
    rows = at_equal_compute(narrow, wide, cost=4.0)
    assert [r["narrow_steps"] for r in rows] == [2000.0, 4000.0, 12000.0]
    assert rows[0]["val_dsc"] == {"wide": 0.9, "narrow": pytest.approx(0.2),
                                  "narrow_same_steps": None}  # before the narrow curve
    assert rows[1]["val_dsc_shifted"]["narrow"] == pytest.approx(0.2)
    assert rows[2]["val_dsc"]["narrow"] is None  # past the narrow curve's end
    assert rows[2]["val_dsc"]["narrow_same_steps"] == pytest.approx(0.3)
    # The measured cost of a 32-filter step (benchmarks/results/training_widths.json).
    assert 3.0 < step_cost(32) < 6.0 and step_cost(16) == 1.0
