"""Several networks of one role behind one :class:`~service.pipeline.infer.Predictor`.

The release trains each U-Net once per cross-validation fold and ships the
folds together: the served probabilities are the mean of the members' class
probabilities, as nnU-Net ensembles its folds. The mean of softmax outputs is
itself a distribution over the classes, so everything downstream (nested
regions, thresholds, the interval's spread) reads it as one network's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.pipeline.infer import Predictor


class MeanOfModels:
    """The mean of the members' outputs; members run one after another on the same batch."""

    def __init__(self, members: Sequence[Predictor]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = tuple(members)

    def __len__(self) -> int:
        return len(self.members)

    @property
    def execution_provider(self) -> str:
        return getattr(self.members[0], "execution_provider", "unknown")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        total = np.asarray(self.members[0](batch), dtype=np.float32).copy()
        for member in self.members[1:]:
            total += member(batch)
        total /= len(self.members)
        return total


# The eight symmetries of the square as (quarter turns, flip of the columns): test-time
# augmentation averages a network's answers over them, each mapped back.
SQUARE_SYMMETRIES = tuple((turns, flip) for flip in (False, True) for turns in range(4))


class SymmetryAverage:
    """Test-time augmentation: the mean over the symmetries of the square of a predictor's
    probabilities, each transformed input's answer transformed back. Inputs must be square
    (every network of the service sees a square)."""

    def __init__(self, member: Predictor,
                 symmetries: Sequence[tuple[int, bool]] = SQUARE_SYMMETRIES) -> None:
        self.member = member
        self.symmetries = tuple(symmetries)

    @property
    def execution_provider(self) -> str:
        return getattr(self.member, "execution_provider", "unknown")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return symmetry_answers(self.member, batch, self.symmetries).mean(axis=0)


def symmetry_answers(predict: Predictor, batch: np.ndarray,
                     symmetries: Sequence[tuple[int, bool]] = SQUARE_SYMMETRIES) -> np.ndarray:
    """(S, N, ...) a predictor's answers to each symmetry of the (square) inputs, each mapped
    back; one run over every symmetry at once: one batch per network, not eight."""
    batch = np.asarray(batch, dtype=np.float32)
    if batch.ndim == 3:
        batch = batch[..., None]
    views = [_apply(batch, turns, flip) for turns, flip in symmetries]
    answers = np.asarray(predict(np.concatenate(views)), dtype=np.float32)
    n = len(batch)
    return np.stack([_undo(answers[k * n:(k + 1) * n], turns, flip)
                     for k, (turns, flip) in enumerate(symmetries)])


def _apply(x: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    x = x[:, :, ::-1] if flip else x
    return np.rot90(x, turns, axes=(1, 2))


def _undo(y: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    y = np.rot90(y, -turns, axes=(1, 2))
    return y[:, :, ::-1] if flip else y
