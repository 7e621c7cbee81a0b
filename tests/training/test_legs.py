"""A release built in legs: a killed leg resumes, a finished one is never trained again."""

from __future__ import annotations

import shutil
from pathlib import Path

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
    return [legs.Leg("myocardium_unet", 0, config), legs.Leg("scar_unet", 0, config),
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
