"""fill_holes: scipy's binary_fill_holes, pixel for pixel, by one labelling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from service.pipeline.postprocess import fill_holes


def _ring(shape: tuple[int, int], centre: tuple[float, float], inner: float,
          outer: float) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    r = np.hypot(yy - centre[0], xx - centre[1])
    return (r >= inner) & (r <= outer)


@pytest.mark.parametrize("seed", range(40))
def test_fill_holes_is_binary_fill_holes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(3, 90, 2))
    mask = rng.random(shape) < rng.uniform(0.2, 0.8)  # noise: many holes, edge cases
    if seed % 2:
        mask |= _ring(shape, tuple(rng.uniform(0, s) for s in shape), 4, 8)
    assert np.array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))


@pytest.mark.parametrize("mask", [np.zeros((5, 5), bool), np.ones((5, 5), bool),
                                  np.ones((2, 7), bool), np.zeros((1, 1), bool),
                                  _ring((30, 30), (15, 15), 5, 9),
                                  _ring((30, 30), (0, 15), 5, 9)])  # a ring cut by the edge
def test_fill_holes_edge_cases(mask: np.ndarray) -> None:
    filled = fill_holes(mask)
    assert np.array_equal(filled, ndimage.binary_fill_holes(mask))
    assert filled is not mask
