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
