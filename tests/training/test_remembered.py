"""The out-of-fold choices' network answers, kept on disk so a stopped release resumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.crossval import Remembered, answer_store


class Counted:
    def __init__(self, path: Path | None = None) -> None:
        self.calls = 0
        self.path = path

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.sqrt(batch) + np.float32(1e-7) * self.calls  # a second run would differ


def test_a_resumed_run_answers_from_the_disk_with_the_same_bytes(tmp_path: Path) -> None:
    batch = np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32)
    first = Counted()
    answer = Remembered(first, tmp_path)(batch)
    assert first.calls == 1
    again = Counted()  # the network of a run started again
    resumed = Remembered(again, tmp_path)
    assert resumed(batch).tobytes() == answer.tobytes() and again.calls == 0
    resumed(batch[:2])  # another input is computed
    assert again.calls == 1
    assert not list(tmp_path.glob("*.partial.npy"))


def test_without_a_store_answers_are_remembered_in_memory_only(tmp_path: Path) -> None:
    batch = np.ones((1, 4, 4, 1), np.float32)
    member = Counted()
    remembered = Remembered(member)
    remembered(batch)
    remembered(batch)
    assert member.calls == 1 and not list(tmp_path.iterdir())


def test_each_network_file_has_its_own_answers(tmp_path: Path) -> None:
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    a.write_bytes(b"network a")
    b.write_bytes(b"network b")
    root = tmp_path / "answers"
    assert answer_store(Counted(a), root) != answer_store(Counted(b), root)
    assert answer_store(Counted(a), root) == answer_store(Counted(tmp_path / "a.onnx"), root)
    assert answer_store(Counted(), root) is None  # no file: memory only
    assert answer_store(Counted(a), None) is None
