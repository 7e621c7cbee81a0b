"""DUPLICATE_INSTANCES (issue 55): two different images of one instance refuse the series
by default; keep-first and keep-last use the copy that arrived first or last, and say so."""

from __future__ import annotations

import io

import pydicom
import pytest

from service.dicom.instances import one_copy_each
from service.errors import ConflictingInstances
from tests.service.dicom.test_instances import LIMIT, blobs_of, edited, three, truncated, uid_of

__all__ = ["three"]  # the fixture, shared


def _used(got, uid: str):
    return next(d for d in got.datasets if str(d.SOPInstanceUID) == uid)


@pytest.mark.parametrize("rule", ["keep-first", "keep-last"])
@pytest.mark.parametrize("corrected_last", [True, False])
def test_the_copy_that_arrived_first_or_last_is_used_with_a_warning_naming_it(
        tmp_path, three, rule, corrected_last) -> None:
    original, corrected = three[1], ("corrected.dcm", edited(three[1][1]))
    copies = [original, corrected] if corrected_last else [corrected, original]
    got = one_copy_each(blobs_of(tmp_path, [three[0], *copies, three[2]]), LIMIT, rule)
    uid = uid_of(original[1])
    used = copies[0] if rule == "keep-first" else copies[-1]
    ignored = copies[-1] if rule == "keep-first" else copies[0]
    assert _used(got, uid).PixelData == pydicom.dcmread(io.BytesIO(used[1])).PixelData
    assert len(got.datasets) == 3
    (warning,) = got.warnings
    assert uid in warning and f"DUPLICATE_INSTANCES={rule}" in warning
    assert f"({used[0]}) was used" in warning and f"{ignored[0]} ignored" in warning


def test_reject_is_the_default_and_its_message_says_how_to_keep_one(tmp_path, three) -> None:
    sent = [*three, ("corrected.dcm", edited(three[1][1]))]
    with pytest.raises(ConflictingInstances) as caught:
        one_copy_each(blobs_of(tmp_path, sent), LIMIT)
    assert "DUPLICATE_INSTANCES=keep-first or keep-last" in caught.value.message
    with pytest.raises(ConflictingInstances):
        one_copy_each(blobs_of(tmp_path, sent), LIMIT, "reject")


def test_a_broken_last_copy_never_wins_and_equal_copies_ignore_the_order(tmp_path,
                                                                        three) -> None:
    corrected = ("corrected.dcm", edited(three[1][1]))
    cut = ("cut.dcm", truncated(edited(three[1][1])))
    got = one_copy_each(blobs_of(tmp_path, [*three, corrected, cut]), LIMIT, "keep-last")
    assert "(corrected.dcm) was used" in got.warnings[0]
    assert [c.blob.name for c in got.bad_copies] == ["cut.dcm"]
    # Same pixels: one instance whatever the rule and the order (as before).
    again = ("again.dcm", three[1][1])
    for k, order in enumerate(([*three, again], [again, *three])):
        (tmp_path / f"e{k}").mkdir()
        got = one_copy_each(blobs_of(tmp_path / f"e{k}", order), LIMIT, "keep-last")
        assert got.warnings == [f"instance {uid_of(three[1][1])} was sent more than once; "
                                "the copy was ignored"]


def test_an_unknown_rule_is_a_bug_not_an_input_error(tmp_path, three) -> None:
    with pytest.raises(ValueError, match="DUPLICATE_INSTANCES"):
        one_copy_each(blobs_of(tmp_path, three), LIMIT, "keep-newest")
