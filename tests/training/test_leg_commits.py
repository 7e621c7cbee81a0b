"""A finished leg is committed with the table written from the kept legs, and nothing else."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from service.pipeline.registry import sha256_of
from training import legs
from training.generated import read_block, replace_block
from training.train import TrainConfig

DOC = "docs/experiments.md"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, text=True,
                          capture_output=True).stdout


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "leg test")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "legs@example.org")
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / DOC).write_text("# History\n\n<!-- legs -->\nno legs\n<!-- /legs -->\n\nProse.\n")
    (repo / "other.txt").write_text("one\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "start")
    return repo


def _leg_folder(repo: Path) -> tuple[legs.Leg, Path]:
    leg = legs.Leg("scar_unet", 0, TrainConfig(epochs=1))
    folder = repo / "releases" / "legs" / leg.name
    folder.mkdir(parents=True)
    (folder / legs.LEG_FILE).write_text('{"leg": "fold0-scar_unet"}\n')
    return leg, folder


def _table(folder: Path):
    return lambda text: replace_block(text, "legs", f"kept: {folder.name}")


def test_a_legs_commit_holds_its_folder_and_the_table_but_no_unfinished_edit(
        repo: Path) -> None:
    leg, folder = _leg_folder(repo)
    # A session's unfinished work: prose in the same document, and a change staged apart.
    (repo / DOC).write_text((repo / DOC).read_text().replace("Prose.", "Prose, edited."))
    (repo / "other.txt").write_text("two\n")
    _git(repo, "add", "other.txt")
    assert legs.commit_leg(leg, folder, "tiny", {DOC: _table(folder)})

    assert _git(repo, "log", "-1", "--format=%s") == "Release leg fold0-scar_unet: tiny\n"
    changed = _git(repo, "show", "--name-only", "--format=", "HEAD").split()
    assert sorted(changed) == [DOC, f"releases/legs/{leg.name}/{legs.LEG_FILE}"]
    committed = _git(repo, "show", f"HEAD:{DOC}")
    assert "kept: fold0-scar_unet" in committed and "Prose.\n" in committed
    # The working tree keeps the edit, and its table agrees with the commit.
    here = (repo / DOC).read_text()
    assert "Prose, edited." in here and read_block(repo / DOC, "legs") == "kept: fold0-scar_unet"
    assert _git(repo, "diff", "--name-only").split() == [DOC]
    # The change staged apart is still staged, and still not committed.
    assert _git(repo, "diff", "--cached", "--name-only").split() == ["other.txt"]
    assert _git(repo, "show", "HEAD:other.txt") == "one\n"


def test_a_leg_that_git_cannot_commit_says_so_and_leaves_head(repo: Path) -> None:
    leg, folder = _leg_folder(repo)
    head = _git(repo, "rev-parse", "HEAD")
    # The document is not in HEAD: nothing is committed, and the tree is left as it was.
    assert not legs.commit_leg(leg, folder, "tiny", {"docs/missing.md": _table(folder)})
    assert _git(repo, "rev-parse", "HEAD") == head
    assert not (repo / "docs" / "missing.md").exists()


def test_the_legs_progress_counts_kept_legs_their_bytes_and_the_training_left(
        tmp_path: Path) -> None:
    import dataclasses
    import json

    from training.fold_legs import legs_progress

    def leg(task: str, fold: int, stage: int = 1) -> legs.Leg:
        return legs.Leg(task, fold, TrainConfig(epochs=1), stage=stage)

    plan = [leg("myocardium_unet", 0), leg("myocardium_unet", 0, 2), leg("enet_p2", 0),
            leg("myocardium_unet", 1), leg("myocardium_unet", 1, 2), leg("enet_p2", 1)]
    for kept, minutes in ((plan[0], 40.0), (plan[1], 60.0)):
        folder = legs.leg_dir(kept, tmp_path)
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(b"\0" * 2**20)  # 1 MiB
        digest = sha256_of(folder / "model.onnx")
        (folder / legs.LEG_FILE).write_text(json.dumps(
            {"config": dataclasses.asdict(kept.config), "uses": [], "train_minutes": minutes,
             "files": {"model.onnx": digest}}))
    # Two myocardium legs left at the median of the kept ones (50 minutes each); the ENets
    # have none kept, so they are said apart.
    assert legs_progress(plan, tmp_path) == (
        "2 of 6 legs kept (2 MiB in git); 4 left, about 2 hours of training on the machine "
        "the kept legs ran on (2 legs of networks with none kept yet not counted).")
    assert legs_progress(plan[:2], tmp_path) == "2 of 2 legs kept (2 MiB in git); 0 left."


def test_a_legs_commit_built_on_a_head_that_moved_is_built_again_on_the_new_one(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    leg, folder = _leg_folder(repo)
    real_run = subprocess.run
    moved = []

    def run(args, *a, **k):
        if "update-ref" in args and not moved:
            # Another leg's commit lands between reading HEAD and moving it.
            (repo / "other.txt").write_text("another leg\n")
            _git(repo, "commit", "-q", "-am", "another leg")
            moved.append(_git(repo, "rev-parse", "HEAD").strip())
        return real_run(args, *a, **k)

    monkeypatch.setattr(legs.subprocess, "run", run)
    assert legs.commit_leg(leg, folder, "tiny", {DOC: _table(folder)})
    assert _git(repo, "rev-parse", "HEAD~1").strip() == moved[0]
    assert _git(repo, "show", "HEAD:other.txt") == "another leg\n"
    assert f"releases/legs/{leg.name}/{legs.LEG_FILE}" in _git(
        repo, "show", "--name-only", "--format=", "HEAD").split()
    assert "kept: fold0-scar_unet" in _git(repo, "show", f"HEAD:{DOC}")
