"""An analysis past ANALYSIS_TIMEOUT_S is kept, the client told where: never failed and stored."""

from __future__ import annotations

import io

import numpy as np
import pydicom

from tests.conftest import multipart, series_files, to_bytes, wait_for


def test_a_slow_analysis_answers_202_and_appears_where_it_said(make_client,
                                                               series_dirs) -> None:
    with make_client(ANALYSIS_TIMEOUT_S="0.01") as client:
        r = client.post("/v1/analyses", files=multipart(series_files(series_dirs[0])))
        assert r.status_code == 202, r.text
        analysis_id = r.json()["id"]
        assert r.headers["location"] == f"/v1/analyses/{analysis_id}"
        report = wait_for(lambda: (g := client.get(r.headers["location"])).status_code == 200
                          and g.json(), what="the analysis to be stored")
        assert report["id"] == analysis_id
        assert [a["id"] for a in client.get("/v1/analyses").json()] == [analysis_id]
        assert client.get(f"/v1/analyses/{analysis_id}/seg").status_code == 200


def test_a_slow_analysis_that_then_fails_says_so_and_stores_nothing(make_client,
                                                                    series_dirs) -> None:
    rng = np.random.default_rng(1)
    files = []
    for name, data in series_files(series_dirs[1]):
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.PixelData = rng.integers(0, 4000, ds.pixel_array.shape).astype(
            ds.pixel_array.dtype).tobytes()
        files.append((name, to_bytes(ds)))
    with make_client(ANALYSIS_TIMEOUT_S="0.01") as client:
        r = client.post("/v1/analyses", files=multipart(files))
        assert r.status_code == 202, r.text
        location = r.headers["location"]
        failed = wait_for(lambda: (g := client.get(location)).status_code != 202 and g,
                          what="the analysis to end")
        assert failed.status_code == 422
        assert failed.json()["error"]["code"] == "not_cardiac_lge"
        assert client.get("/v1/analyses").json() == []
