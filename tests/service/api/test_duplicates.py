"""Archives as they come, over HTTP: duplicated instances and files named as sent (issue 46)."""

from __future__ import annotations

import random

import pytest

from tests.conftest import multipart, series_files
from tests.service.dicom.test_instances import edited, truncated, uid_of


@pytest.fixture(scope="module")
def files(series_dirs) -> list[tuple[str, bytes]]:
    return series_files(series_dirs[0])


@pytest.fixture(scope="module")
def plain(client, files) -> dict:
    r = client.post("/v1/analyses", files=multipart(files))
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_truncated_copy_beside_a_whole_one_is_analysed_with_a_warning(client, files, plain,
                                                                        seed) -> None:
    sent = [*files, ("copy-of-" + files[4][0], truncated(files[4][1]))]
    random.Random(seed).shuffle(sent)
    r = client.post("/v1/analyses", files=multipart(sent))
    assert r.status_code == 201, r.text
    report = r.json()
    assert report["scar_percent"] == plain["scar_percent"]
    assert len(report["slices"]) == len(plain["slices"])
    assert any(f"copy-of-{files[4][0]}" in w and "truncated or corrupt" in w
               for w in report["warnings"])


@pytest.mark.parametrize("seed", [0, 1])
def test_two_different_images_of_one_instance_are_refused_naming_it(client, files, seed) -> None:
    sent = [*files, ("edited.dcm", edited(files[-1][1]))]
    random.Random(seed).shuffle(sent)
    r = client.post("/v1/analyses", files=multipart(sent))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "conflicting_instances"
    assert uid_of(files[-1][1]) in error["message"]
    assert "edited.dcm" in error["message"] and files[-1][0] in error["message"]


def test_an_identical_copy_is_one_instance_with_a_warning(client, files, plain) -> None:
    r = client.post("/v1/analyses", files=multipart([*files, ("again.dcm", files[2][1])]))
    assert r.status_code == 201, r.text
    assert r.json()["scar_percent"] == plain["scar_percent"]
    assert any("sent more than once" in w for w in r.json()["warnings"])


def test_a_part_that_is_not_dicom_is_named_by_the_file_name_sent(client, files) -> None:
    sent = [*files[:3], ("notes from the ward.txt", b"plain text, not DICOM" * 20)]
    r = client.post("/v1/analyses", files=multipart(sent))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "not_dicom"
    assert "notes from the ward.txt" in r.json()["error"]["message"]
    assert "part " not in r.json()["error"]["message"]


def test_stow_rs_keeps_a_second_copy_and_the_same_rule_decides(make_client, files) -> None:
    """A PACS sends an instance again with another image: kept beside the first, not over
    it, and the series fails with conflicting_instances, as an upload would."""
    from tests.conftest import series_uid_of, settled, stow

    with make_client(STOW_QUIET_PERIOD_S="3.0") as client:  # both sends in one quiet period
        assert stow(client, files).status_code == 200
        assert stow(client, [("edited.dcm", edited(files[-1][1]))]).status_code == 200
        state = settled(client, series_uid_of(files))
        assert state["state"] == "failed", state
        assert state["error"]["code"] == "conflicting_instances"
        assert uid_of(files[-1][1]) in state["error"]["message"]
