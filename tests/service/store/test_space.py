"""The store stays full after a refusal until what a retry needs is free (issue 54)."""

from __future__ import annotations

import pytest

from service.errors import InsufficientStorage
from service.store.space import Space


def test_a_series_refused_for_space_holds_the_store_full_until_its_upload_fits_too(
        tmp_path, monkeypatch) -> None:
    """Its upload's spool is freed when it is refused, and a retry needs it again: with
    smaller stored arrays (issue 54) that freed spool alone could end the hold at once."""
    space, free = Space(tmp_path, "the store"), [1_000]
    monkeypatch.setattr(space, "free", lambda: free[0])
    with pytest.raises(InsufficientStorage):
        space.check(1_500, spooled=600)
    free[0] = 1_600  # the refused upload's spool removed: the analysis alone would fit now
    assert space.problem() is not None
    free[0] = 2_100  # ... and the upload too
    assert space.problem() is None
