"""Round trip through a real Orthanc: upload -> stable series -> STOW-RS -> SEG and SR back.

Starts Orthanc (Debian packages ``orthanc`` and ``orthanc-dicomweb``) with the
project's configuration (``deploy/orthanc``) and the service as a real
process, both on loopback, each on its own free port and data folder.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import highdicom as hd
import httpx
import pytest

from tests.conftest import (
    free_port,
    require_tool,
    series_files,
    start_service,
    stop_process,
    wait_until,
)

REPO = Path(__file__).resolve().parents[3]
ORTHANC_CONFIG = REPO / "deploy" / "orthanc"
USER, PASSWORD, API_KEY = "lge", "test-password", "test-key"

pytestmark = pytest.mark.slow


@contextmanager
def running_orthanc(tmp_path: Path, port: int | None = None, forward: bool = True,
                    **env: str):
    """Orthanc with the project's configuration as shipped, on loopback; (url, auth).

    Only what a test run must own changes: ports, folders, the plugin's path,
    a short StableAge, the Lua path (none without ``forward``), a user.
    """
    orthanc = require_tool("Orthanc")
    plugins = glob.glob("/usr/share/orthanc/plugins/libOrthancDicomWeb.so*")
    if not plugins:
        if os.environ.get("CI"):
            pytest.fail("the orthanc-dicomweb plugin is not installed; .ci/run must install it")
        pytest.skip("the orthanc-dicomweb plugin is not installed")
    orthanc_port, dicom_port = port or free_port(), free_port()
    orthanc_url = f"http://127.0.0.1:{orthanc_port}"
    config = json.loads((ORTHANC_CONFIG / "orthanc.json").read_text())
    config |= {"HttpPort": orthanc_port, "DicomPort": dicom_port,
               "StorageDirectory": str(tmp_path / "orthanc"),
               "IndexDirectory": str(tmp_path / "orthanc"), "Plugins": plugins[:1],
               "StableAge": 2,
               "LuaScripts": [str(ORTHANC_CONFIG / "forward-lge.lua")] if forward else [],
               "RegisteredUsers": {USER: PASSWORD}}
    (tmp_path / "orthanc.json").write_text(json.dumps(config))
    orthanc_log = open(tmp_path / "orthanc.log", "wb")  # noqa: SIM115 - closed below
    pacs = subprocess.Popen([orthanc, str(tmp_path / "orthanc.json")], env=os.environ | env,
                            stdout=orthanc_log, stderr=subprocess.STDOUT, cwd=tmp_path)
    auth = (USER, PASSWORD)
    try:
        wait_until(lambda: httpx.get(f"{orthanc_url}/system", auth=auth).status_code == 200,
                   30, "Orthanc")
        yield orthanc_url, auth
    finally:
        stop_process(pacs)
        orthanc_log.close()
        tail = (tmp_path / "orthanc.log").read_text(errors="replace")[-3000:]
        sys.stderr.write(f"--- orthanc.log (tail) ---\n{tail}\n")


@pytest.fixture
def orthanc_and_service(tmp_path):
    orthanc_port = free_port()
    service, service_url = start_service(
        tmp_path / "service", tmp_path / "service.log", API_KEY=API_KEY,
        STOW_QUIET_PERIOD_S="1", BACKGROUND_POLL_S="0.2",
        DICOMWEB_STORE_URL=f"http://127.0.0.1:{orthanc_port}/dicom-web",
        DICOMWEB_STORE_USERNAME=USER, DICOMWEB_STORE_PASSWORD=PASSWORD)
    try:
        with running_orthanc(tmp_path, orthanc_port,
                             LGE_SERVICE_DICOMWEB_URL=f"{service_url}/dicomweb/",
                             LGE_SERVICE_API_KEY=API_KEY) as (orthanc_url, auth):
            yield orthanc_url, auth, service_url
    finally:
        stop_process(service)
        tail = (tmp_path / "service.log").read_text(errors="replace")[-3000:]
        sys.stderr.write(f"--- service.log (tail) ---\n{tail}\n")


def test_a_series_uploaded_to_orthanc_comes_back_with_seg_and_sr(orthanc_and_service,
                                                                  series_dirs) -> None:
    import requests
    from dicomweb_client.api import DICOMwebClient

    orthanc_url, auth, service_url = orthanc_and_service
    files = series_files(series_dirs[0])
    for _, data in files:
        r = httpx.post(f"{orthanc_url}/instances", content=data, auth=auth)
        assert r.status_code == 200, r.text
    mr = r.json()
    study_uid = httpx.get(f"{orthanc_url}/studies/{mr['ParentStudy']}", auth=auth) \
        .json()["MainDicomTags"]["StudyInstanceUID"]

    def results_in_orthanc():
        series = httpx.get(f"{orthanc_url}/studies/{mr['ParentStudy']}/series",
                           auth=auth).json()
        found = {s["MainDicomTags"].get("Modality"): s for s in series}
        return found if {"MR", "SEG", "SR"} <= set(found) else None

    found = wait_until(results_in_orthanc, 180, "SEG and SR to appear in Orthanc")
    mr_series_uid = found["MR"]["MainDicomTags"]["SeriesInstanceUID"]
    assert len(found["MR"]["Instances"]) == len(files)

    # Fetch them back over Orthanc's DICOMweb (WADO-RS) and decode them.
    session = requests.Session()
    session.auth = auth
    wado = DICOMwebClient(f"{orthanc_url}/dicom-web", session=session)
    seg_ds = wado.retrieve_series(study_uid, found["SEG"]["MainDicomTags"]["SeriesInstanceUID"])
    sr_ds = wado.retrieve_series(study_uid, found["SR"]["MainDicomTags"]["SeriesInstanceUID"])
    assert len(seg_ds) == 1 and len(sr_ds) == 1
    seg = hd.seg.Segmentation.from_dataset(seg_ds[0])
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Myocardium", "Scar", "MVO"]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == mr_series_uid
    sr = hd.sr.Comprehensive3DSR.from_dataset(sr_ds[0])
    assert sr.StudyInstanceUID == study_uid

    # The service analysed that series exactly once, and the pushed SEG is its SEG.
    headers = {"Authorization": f"Bearer {API_KEY}"}
    state = httpx.get(f"{service_url}/v1/series/{mr_series_uid}", headers=headers).json()
    assert state["state"] == "done" and len(state["analyses"]) == 1
    report = httpx.get(f"{service_url}/v1/analyses/{state['analyses'][0]}",
                       headers=headers).json()
    assert report["seg_sop_instance_uid"] == seg.SOPInstanceUID
    assert report["sr_sop_instance_uid"] == sr.SOPInstanceUID
    assert report["store_back"]["status"] == "done"
    # SEG and SR arriving in Orthanc must not be sent back to the service (no loop).
    time.sleep(3)
    assert httpx.get(f"{service_url}/v1/analyses", headers=headers).json().__len__() == 1
