"""OHIF, the radiologist's web viewer, opens our SEG over a real Orthanc, in Chromium.

The OHIF build is the npm package @ohif/app at the version pinned in
``deploy/ohif/fetch.sh`` (run by ``.ci/run``; cached under ``var/ohif``),
configured by ``deploy/ohif/app-config.js`` as in docker-compose. A small
server plays the part of nginx there: the build's files, that config, and
Orthanc's DICOMweb under ``/dicom-web`` on one origin.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from tests.conftest import multipart, require_tool, series_files, truth_seg
from tests.service.pacs.test_orthanc import running_orthanc

REPO = Path(__file__).resolve().parents[3]
OHIF_VERSION = re.search(r"^VERSION=(\S+)$", (REPO / "deploy" / "ohif" / "fetch.sh").read_text(),
                         re.MULTILINE).group(1)
OHIF_DIST = REPO / "var" / "ohif" / OHIF_VERSION / "dist"
SCREENSHOT = REPO / "docs" / "ohif_seg.png"

pytestmark = pytest.mark.slow


def ohif_dist() -> Path:
    if not (OHIF_DIST / "index.html").exists():
        if os.environ.get("CI"):
            pytest.fail(f"the OHIF build is not in {OHIF_DIST}; .ci/run runs deploy/ohif/fetch.sh")
        pytest.skip("the OHIF build is not fetched (bash deploy/ohif/fetch.sh)")
    return OHIF_DIST


def serve_ohif(dist: Path, orthanc_url: str) -> ThreadingHTTPServer:
    """OHIF's files, its config and Orthanc's DICOMweb on one loopback origin."""
    config = (REPO / "deploy" / "ohif" / "app-config.js").read_bytes()
    upstream = httpx.Client(base_url=orthanc_url, timeout=60)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?")[0]
            if path.startswith("/dicom-web/"):
                return self._proxy()
            if path == "/app-config.js":
                return self._send(200, config, "application/javascript")
            file = (dist / path.lstrip("/")).resolve()
            if not file.is_file() or dist not in file.parents:
                file = dist / "index.html"  # the single-page app's routes
            kind = {".js": "application/javascript", ".css": "text/css", ".html": "text/html",
                    ".wasm": "application/wasm", ".json": "application/json",
                    ".svg": "image/svg+xml", ".png": "image/png"}.get(file.suffix,
                                                                      "application/octet-stream")
            return self._send(200, file.read_bytes(), kind)

        def _proxy(self) -> None:
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() in ("accept", "authorization")}
            r = upstream.get(self.path, headers=headers)
            extra = {k: v for k, v in r.headers.items() if k.lower() == "www-authenticate"}
            self._send(r.status_code, r.content, r.headers.get("content-type", ""), extra)

        def _send(self, status: int, body: bytes, kind: str, extra: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass(frozen=True)
class Study:
    orthanc_url: str
    auth: tuple[str, str]
    study_uid: str
    # InstanceNumber -> (myocardium, scar, MVO) of the SEG loaded
    masks: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]


def _encoded(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def study_in_orthanc(tmp_path, cored_series_dir):
    """Orthanc holding a phantom MR series, the SR the service made of it, and a SEG from
    the service's encoder with all three segments drawn.

    The SEG's masks are the phantom's truth, with the scar's core (one pixel in) as the MVO,
    so that the third segment is painted on every slice with scar, whatever the models.
    """
    from service.api.app import create_app

    files = series_files(cored_series_dir)
    with TestClient(create_app()) as client:
        r = client.post("/v1/analyses", files=multipart(files))
        assert r.status_code == 201, r.text
        report, base = r.json(), r.headers["location"]
        sr = client.get(f"{base}/sr").content
    volume, (myocardium, scar, mvo), seg_ds = truth_seg(cored_series_dir)
    assert mvo.any() and not (mvo & ~scar).any()
    seg = _encoded(seg_ds)
    masks = {int(s.dataset.InstanceNumber): (myocardium[k], scar[k], mvo[k])
             for k, s in enumerate(volume.slices)}
    assert report["study_instance_uid"] == volume.study_instance_uid
    with running_orthanc(tmp_path, forward=False) as (orthanc_url, auth):
        for data in [d for _, d in files] + [seg, sr]:
            assert httpx.post(f"{orthanc_url}/instances", content=data,
                              auth=auth).status_code == 200
        yield Study(orthanc_url, auth, report["study_instance_uid"], masks)


def _on_screen(mask: np.ndarray, canvas: dict, shape: tuple[int, int]) -> np.ndarray:
    """Screen pixels (page coordinates) covered by an image mask, the image fitted and centred
    in the canvas as OHIF's viewport shows it at first."""
    rows, cols = mask.shape
    scale = min(canvas["width"] / cols, canvas["height"] / rows)
    x0 = canvas["x"] + (canvas["width"] - cols * scale) / 2
    y0 = canvas["y"] + (canvas["height"] - rows * scale) / 2
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
    r = np.floor((ys + 0.5 - y0) / scale).astype(int)
    c = np.floor((xs + 0.5 - x0) / scale).astype(int)
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    covered = np.zeros(shape, bool)
    covered[inside] = mask[r[inside], c[inside]]
    return covered


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def test_ohif_lists_our_segments_and_paints_them_over_the_image(study_in_orthanc,
                                                                 tmp_path) -> None:
    from scipy import ndimage

    chromium = require_tool("chromium")
    playwright = pytest.importorskip("playwright.sync_api")
    study = study_in_orthanc
    server = serve_ohif(ohif_dist(), study.orthanc_url)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    errors: list[str] = []
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
            context = browser.new_context(viewport={"width": 1400, "height": 900},
                                          http_credentials={"username": study.auth[0],
                                                            "password": study.auth[1]})
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{url}/viewer?StudyInstanceUIDs={study.study_uid}")
            page.get_by_text("Skip all").click(timeout=60000)
            page.wait_for_timeout(2000)
            canvas = page.locator("canvas.cornerstone-canvas").bounding_box()
            shown = int(re.search(r"I:\s*(\d+)", page.inner_text(
                "[data-cy=viewport-overlay-bottom-right]")).group(1))
            before = _png(page.screenshot())
            page.get_by_text("SEG", exact=True).dblclick()
            page.get_by_role("button", name="Yes").click(timeout=60000)
            page.wait_for_timeout(5000)
            after = _png(page.screenshot())
            assert page.locator("canvas.cornerstone-canvas").bounding_box() == canvas
            page.locator("[data-cy=panelSegmentation-btn]").click()
            for label in ("Myocardium", "Scar", "MVO"):
                page.get_by_text(label, exact=True).first.wait_for(timeout=30000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(tmp_path / "ohif.png"))
            browser.close()
    finally:
        server.shutdown()
    # Nothing OHIF logged as an error while loading the study, our SEG and our SR.
    assert errors == []
    myocardium, scar, mvo = study.masks[shown]
    assert mvo.any(), "the test needs the first slice OHIF shows to have scar with a core"
    # What loading the SEG changed on the image: the segment colours (sky blue: blue
    # dominant; vermillion: red over green and blue; yellow: red and green over blue)
    # and where they are.
    changed = np.abs(after - before).sum(-1) > 60
    in_canvas = np.zeros(changed.shape, bool)
    x, y = int(canvas["x"]) + 2, int(canvas["y"]) + 2
    in_canvas[y:int(y + canvas["height"]) - 4, x:int(x + canvas["width"]) - 4] = True
    changed &= in_canvas
    red, green, blue = after[..., 0], after[..., 1], after[..., 2]
    warm = changed & (red > blue + 40)
    painted = {"Myocardium": changed & (blue > red + 40),
               "Scar": warm & (red > green + 25), "MVO": warm & (red < green + 20)}
    for label, mask in (("Myocardium", myocardium & ~scar), ("Scar", scar & ~mvo),
                        ("MVO", mvo)):
        on_screen = _on_screen(mask, canvas, changed.shape)
        near = ndimage.binary_dilation(on_screen, iterations=4)  # outlines, rounding
        hits = painted[label]
        assert hits.sum() >= 0.2 * on_screen.sum(), (label, hits.sum(), on_screen.sum())
        assert (hits & near).sum() >= 0.95 * hits.sum(), (label, (hits & near).sum(),
                                                          hits.sum())
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS"):
        shutil.copy(tmp_path / "ohif.png", SCREENSHOT)
