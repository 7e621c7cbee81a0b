"""A PACS that sends a corrected image again (issue 55, DUPLICATE_INSTANCES): uploads
decide by the order of their parts, STOW-RS by receipt, and a corrected image of a series
already analysed is analysed again, superseding the earlier analysis."""

from __future__ import annotations

import pytest

from service.pacs.inbox import Inbox
from tests.conftest import multipart, series_files, series_uid_of, settled, stow
from tests.service.dicom.test_instances import edited, uid_of


@pytest.fixture(scope="module")
def files(series_dirs) -> list[tuple[str, bytes]]:
    return series_files(series_dirs[0])


@pytest.mark.parametrize("rule", ["keep-first", "keep-last"])
def test_an_upload_keeps_the_part_sent_first_or_last(make_client, files, rule) -> None:
    corrected = ("corrected.dcm", edited(files[3][1]))
    with make_client(DUPLICATE_INSTANCES=rule) as client:
        plain = client.post("/v1/analyses", files=multipart(files)).json()
        for order in ([*files, corrected], [corrected, *files]):
            r = client.post("/v1/analyses", files=multipart(order))
            assert r.status_code == 201, r.text
            (warning,) = [w for w in r.json()["warnings"] if "DUPLICATE_INSTANCES" in w]
            used = order[0 if rule == "keep-first" else -1]
            # files[3] is the original when it is not first or last in the body
            expected = used[0] if used[0] == "corrected.dcm" else files[3][0]
            assert uid_of(files[3][1]) in warning and f"({expected}) was used" in warning
            if expected != "corrected.dcm":  # the original image: the same measurements
                assert r.json()["scar_percent"] == plain["scar_percent"]


def test_stow_keep_last_analyses_a_corrected_image_again_and_supersedes(make_client,
                                                                       files) -> None:
    series_uid, uid = series_uid_of(files), uid_of(files[3][1])
    with make_client(DUPLICATE_INSTANCES="keep-last") as client:
        assert stow(client, files).status_code == 200
        first = settled(client, series_uid)
        assert first["state"] == "done" and first["note"] is None
        # The PACS sends the corrected image later.
        assert stow(client, [("corrected.dcm", edited(files[3][1]))]).status_code == 200
        state = settled(client, series_uid, analyses=2)
        assert state["state"] == "done", state
        old, new = state["analyses"]
        assert old == first["analyses"][0]
        for text in (state["note"], *client.get(f"/v1/analyses/{new}").json()["warnings"]):
            if "supersedes" in text:
                assert old in text and uid in text and "keep-last" in text
                break
        else:
            raise AssertionError("nothing says the new analysis supersedes the old")
        assert uid in state["note"] and old in state["note"]
        warnings = client.get(f"/v1/analyses/{new}").json()["warnings"]
        assert any(".copy-" in w and "was used" in w and uid in w for w in warnings), warnings
        assert client.get(f"/v1/analyses/{new}/seg").status_code == 200
        # The same corrected copy again changes nothing.
        assert stow(client, [("corrected.dcm", edited(files[3][1]))]).status_code == 200
        assert client.get(f"/v1/series/{series_uid}").json()["state"] == "done"


def test_the_inbox_gives_copies_in_the_order_they_arrived(tmp_path, files) -> None:
    inbox = Inbox(tmp_path)
    series_uid, uid = series_uid_of(files), uid_of(files[3][1])
    study = "1.2.3"
    later = [edited(files[3][1])]
    later.append(bytearray(later[0]))
    later[1][-1] ^= 0xFF  # a third image: another last byte
    # Receipt times out of the order of their digests, and past a power of ten.
    for now, data in zip((9.5, 10.25, 100.0), [files[3][1], *later], strict=True):
        assert inbox.add(study, series_uid, uid, bytes(data), now=now)
    assert not inbox.add(study, series_uid, uid, later[0], now=200.0)  # held: no change
    inbox.close()
    inbox = Inbox(tmp_path)  # the order survives a restart (it is in the names)
    paths, before = inbox.claim(series_uid)
    assert [p.read_bytes() for p in paths] == [files[3][1], *map(bytes, later)]
    assert paths[0].name == f"{uid}.dcm"
    inbox.close()
