"""A finished leg is committed with the table written from the kept legs, and nothing else."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

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
