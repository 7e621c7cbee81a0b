"""Overlays, the viewer page and the index page; the viewer driven in a real Chromium."""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path

import highdicom as hd
import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from scipy import ndimage

from service.viewer.bullseye import bullseye_svg, legend_svg, scar_colour
from service.viewer.overlay import MVO_RGB, MYOCARDIUM_RGB, SCAR_RGB, render_overlay
from tests.conftest import (
    multipart,
    require_tool,
    series_files,
    start_service,
    stop_process,
    to_bytes,
)

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def scarred(client, series_dirs) -> dict:
    """The analysis of a phantom series in which the model finds scar."""
    for series_dir in series_dirs:
        r = client.post("/v1/analyses", files=multipart(series_files(series_dir)))
        assert r.status_code == 201, r.text
        if r.json()["scar_percent"] > 2.0:
            return r.json()
    pytest.fail("no phantom series with scar found by the model")


def seg_masks(seg_bytes: bytes, report: dict) -> tuple[np.ndarray, np.ndarray]:
    """(myocardium, scar) per report slice, read back from the returned SEG."""
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(seg_bytes)))
    sops = [s["sop_instance_uid"] for s in report["slices"]]
    volume = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=sops, segment_numbers=[1, 2], skip_overlap_checks=True)
    return volume[..., 0].astype(bool), volume[..., 1].astype(bool)


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def _purple(rgb: np.ndarray) -> np.ndarray:
    """Pixels tinted towards the disagreement colour (red and blue both above green)."""
    return (rgb[..., 0] - rgb[..., 1] > 25) & (rgb[..., 2] - rgb[..., 1] > 15)


def _orange(rgb: np.ndarray) -> np.ndarray:
    """Pixels tinted towards the scar colour (red well above blue)."""
    return (rgb[..., 0] - rgb[..., 2]) > 40


def test_overlay_draws_scar_where_the_seg_says_and_toggles(client, scarred) -> None:
    base = f"/v1/analyses/{scarred['id']}"
    myocardium, scar = seg_masks(client.get(f"{base}/seg").content, scarred)
    k = int(np.argmax(scar.sum(axis=(1, 2))))
    r = client.get(f"{base}/overlay/{k}.png", params={"zoom": 0})  # the whole field of view
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    rgb = _png(r.content)
    h, w = scar.shape[1:]
    scale = rgb.shape[0] // h
    assert rgb.shape == (h * scale, w * scale, 3) and scale >= 2  # integer upscale
    up = lambda m: np.kron(m, np.ones((scale, scale), bool))  # noqa: E731
    inner_scar = ndimage.binary_erosion(up(scar[k]), iterations=scale)
    far = ~ndimage.binary_dilation(up(myocardium[k] | scar[k]), iterations=3 * scale)
    assert inner_scar.any()
    assert _orange(rgb)[inner_scar].mean() > 0.95
    assert _orange(rgb)[far].mean() < 0.01
    # The myocardium outline is drawn in its own colour on the ring's border.
    outline = np.all(rgb == MYOCARDIUM_RGB, axis=-1)
    assert outline.sum() > 50 and (up(myocardium[k]) | ~far)[outline].all()
    hidden = _png(client.get(f"{base}/overlay/{k}.png", params={"scar": "0", "zoom": 0,
                                                                 "myocardium": "0"}).content)
    assert not _orange(hidden)[inner_scar].any()
    assert not np.all(hidden == MYOCARDIUM_RGB, axis=-1).any()
    assert np.all(hidden[..., 0] == hidden[..., 2])  # plain grey
    # Window/level changes the grey, not the geometry.
    dark = _png(client.get(f"{base}/overlay/{k}.png", params={
        "scar": "0", "myocardium": "0", "level": 1e6, "window": 1, "zoom": 0}).content)
    assert dark.max() == 0
    whole = {"scale": 1, "zoom": 0}
    assert client.get(f"{base}/overlay/{k}.png", params=whole).status_code == 200
    assert _png(client.get(f"{base}/overlay/{k}.png", params=whole).content).shape == (h, w, 3)
    # Zoomed to the heart: the same box on every slice, holding all the myocardium.
    zoomed = client.get(f"{base}/overlay/{k}.png", params={"zoom": 1, "scale": 2})
    y0, x0, y1, x1 = map(int, zoomed.headers["x-overlay-box"].split(","))
    assert client.get(f"{base}/overlay/0.png", params={"zoom": 1}).headers[
        "x-overlay-box"] == zoomed.headers["x-overlay-box"]
    # Zoomed is the default: the heart, with the whole field of view one parameter away.
    assert client.get(f"{base}/overlay/0.png").headers["x-overlay-box"] == \
        zoomed.headers["x-overlay-box"]
    assert myocardium[:, y0:y1, x0:x1].sum() == myocardium.sum()
    assert (y1 - y0) * (x1 - x0) < h * w / 2
    crop = _png(zoomed.content)
    assert crop.shape == (2 * (y1 - y0), 2 * (x1 - x0), 3)
    inner = ndimage.binary_erosion(scar[k, y0:y1, x0:x1])  # borders carry the outlines
    assert _orange(crop)[np.kron(inner, np.ones((2, 2), bool))].mean() > 0.95


def test_out_of_range_slices_and_unknown_analyses_are_404(client, scarred) -> None:
    n = len(scarred["slices"])
    for path in (f"/v1/analyses/{scarred['id']}/overlay/{n}.png",
                 f"/v1/analyses/{scarred['id']}/overlay/-1.png",
                 f"/v1/analyses/{'0' * 32}/overlay/0.png", f"/v1/analyses/{'0' * 32}/viewer"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
    r = client.get(f"/v1/analyses/{scarred['id']}/overlay/0.png", params={"window": "-3"})
    assert r.status_code == 422


def test_viewer_and_index_pages_are_self_contained(client, scarred) -> None:
    page = client.get(f"/v1/analyses/{scarred['id']}/viewer")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "synthetic phantoms" in html and "not validated for clinical use" in html
    for model in scarred["models"]:
        assert model["name"] in html and model["version"] in html
    assert scarred["execution_provider"] in html
    assert html.count("<path ") == 16 and "4-SD" in html and "FWHM" in html
    # No asset from elsewhere: every src/href is relative, absolute on this host or data:.
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert not url.startswith(("http:", "https:", "//")), url
    index = client.get("/")
    assert index.status_code == 200 and f"/v1/analyses/{scarred['id']}/viewer" in index.text
    assert 'type="file"' in index.text and "cascade-unet" in index.text


def test_the_disagreement_layer_marks_the_borders_not_the_background(client, scarred) -> None:
    base = f"/v1/analyses/{scarred['id']}"
    assert client.get(f"{base}/sr").status_code == 200  # encoded, and the layer with it
    k = max(range(len(scarred["slices"])), key=lambda i: scarred["slices"][i]["scar_area_mm2"])
    plain = client.get(f"{base}/overlay/{k}.png", params={"zoom": 0})
    layered = client.get(f"{base}/overlay/{k}.png", params={"zoom": 0, "disagreement": 1})
    assert layered.status_code == 200 and layered.headers["content-type"] == "image/png"
    assert _purple(_png(layered.content)).sum() > _purple(_png(plain.content)).sum()
    myocardium, scar = seg_masks(client.get(f"{base}/seg").content, scarred)
    rgb = _png(client.get(f"{base}/overlay/{k}.png", params={"zoom": 0, "disagreement": 1,
                                                               "scar": 0,
                                                               "myocardium": 0}).content)
    scale = rgb.shape[0] // myocardium.shape[1]
    near = ndimage.binary_dilation(myocardium[k] | scar[k], iterations=4)
    far = ~ndimage.binary_dilation(myocardium[k] | scar[k], iterations=25)
    up = lambda m: np.kron(m, np.ones((scale, scale), bool))  # noqa: E731
    assert _purple(rgb)[up(near)].mean() > 0.01  # the networks' doubt lies at the heart
    assert _purple(rgb)[up(far)].mean() < 0.001  # not in the chest wall or the air


def test_the_front_page_lists_analyses_by_patient_study_date_and_series(client,
                                                                        series_dirs) -> None:
    files = []
    for name, data in series_files(series_dirs[0]):
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.PatientName, ds.PatientID = "Frontpage^Alice", "FP-20461"
        ds.StudyDate, ds.SeriesDescription = "20250314", "LGE PSIR SAX (front page test)"
        files.append((name, to_bytes(ds)))
    r = client.post("/v1/analyses", files=multipart(files))
    assert r.status_code == 201, r.text
    analysis_id = r.json()["id"]
    row = next(tr for tr in client.get("/").text.split("<tr>") if analysis_id in tr)
    for shown in ("Frontpage Alice", "FP-20461", "2025-03-14",
                  "LGE PSIR SAX (front page test)"):
        assert shown in row, shown
    assert "Frontpage^Alice" not in r.text  # the report's fields stay the contract's
    viewer = client.get(f"/v1/analyses/{analysis_id}/viewer").text
    assert "Frontpage Alice" in viewer and "FP-20461" in viewer and "2025-03-14" in viewer


def test_the_bullseye_says_what_its_numbers_are() -> None:
    """10 % scar beside a 26-50 % class read as a contradiction until each number is named."""
    segments = [{"segment": n, "name": f"s{n}", "scar_percent": 10.0 if n == 1 else 0.0,
                 "transmurality_class": "26-50%" if n == 1 else "0%"} for n in range(1, 17)]
    svg = bullseye_svg(segments)
    first = re.search(r'data-segment="1"><title>([^<]+)</title>', svg).group(1)
    assert "10.0 % of its myocardium is scar" in first
    assert "transmural extent where scarred 26-50%" in first
    assert "% of the segment&#x27;s myocardium" in legend_svg() or \
        "% of the segment's myocardium" in legend_svg()
    page = (REPO / "service/viewer/web/viewer.html").read_text()
    assert "share of the segment's myocardium that is scar" in page
    assert "transmural extent where scarred" in page


def test_bullseye_places_the_segments_the_usual_way() -> None:
    segments = [{"segment": n, "name": f"s{n}", "scar_percent": 0.0,
                 "transmurality_class": "0%"} for n in range(1, 17)]
    segments[0]["scar_percent"] = 40.0  # basal anterior
    svg = bullseye_svg(segments, size=200)
    assert svg.count("<path ") == 16
    # Segment 1 (basal anterior) is at the top, 4 (basal inferior) at the bottom,
    # 2-3 (septum) on the left, 5-6 (lateral) on the right.
    centres = {int(n): (float(x), float(y)) for x, y, n in re.findall(
        r'<text x="([\d.]+)" y="([\d.]+)"[^>]*font-weight="bold"[^>]*>(\d+)</text>', svg)}
    assert centres[1][1] < 50 and centres[4][1] > 150
    assert centres[2][0] < 100 and centres[3][0] < 100 and centres[5][0] > 100
    assert centres[14][0] < 100 < centres[16][0]
    assert scar_colour(0.0) != scar_colour(1.0) != scar_colour(40.0)
    assert 'fill="rgb({},{},{})"'.format(*scar_colour(40.0)) in svg


def test_overlay_fills_mvo_in_its_own_colour_inside_the_scar() -> None:
    image = np.full((40, 40), 100.0)
    yy, xx = np.mgrid[:40, :40]
    radius = np.hypot(yy - 20, xx - 20)
    myocardium = (radius > 8) & (radius < 14)
    scar = myocardium & (xx > 24)
    # Away from the ring's edges, where the myocardium outline is drawn over everything.
    mvo = scar & (radius > 9.5) & (radius < 12.5) & (np.abs(yy - 20) < 3)
    rgb = render_overlay(image, myocardium, scar, 200.0, 100.0, 1, mvo=mvo).astype(int)
    without = render_overlay(image, myocardium, scar, 200.0, 100.0, 1).astype(int)
    # Yellow: red well over blue, green close to red (vermillion's green is far below).
    yellowish = (rgb[..., 0] - rgb[..., 2] > 40) & (rgb[..., 0] - rgb[..., 1] < 45)
    # Yellow (red and green over blue) exactly on the MVO, vermillion (green low) on the rest
    # of the scar, and without MVO the picture is the scar's alone.
    assert np.array_equal(yellowish, mvo)
    rest = scar & ~ndimage.binary_dilation(mvo) & ndimage.binary_erosion(myocardium)
    assert rest.any() and np.all(rgb[rest][:, 0] - rgb[rest][:, 1] > 45)
    assert not np.array_equal(rgb, without) and np.array_equal(rgb[~mvo], without[~mvo])
    assert tuple(rgb[mvo][0]) != tuple(rgb[rest][0])
    assert MVO_RGB not in (MYOCARDIUM_RGB, SCAR_RGB)


def test_bullseye_marks_segments_with_mvo_and_the_legend_explains_it() -> None:
    segments = [{"segment": n, "name": f"s{n}", "scar_percent": 0.0, "mvo_percent": 0.0,
                 "transmurality_class": "0%"} for n in range(1, 17)]
    segments[9].update(scar_percent=35.0, mvo_percent=4.0)  # mid inferior
    svg = bullseye_svg(segments, size=200)
    dots = re.findall(r'<circle [^>]*class="mvo" data-segment="(\d+)"', svg)
    assert dots == ["10"]
    assert "MVO 4.0 %" in svg
    legend = legend_svg()
    assert "microvascular obstruction" in legend
    assert 'fill="rgb({},{},{})"'.format(*MVO_RGB) in legend
    assert 'fill="rgb({},{},{})"'.format(*MVO_RGB) in svg
    # Reports stored before MVO existed have no such field: no dots, no error.
    for s in segments:
        s.pop("mvo_percent")
    assert 'class="mvo"' not in bullseye_svg(segments)


@pytest.fixture(scope="module")
def browser():
    chromium = require_tool("chromium")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    folder = tmp_path_factory.mktemp("live")
    process, url = start_service(folder / "data", folder / "service.log")
    yield url
    stop_process(process)


@pytest.mark.slow
def test_the_viewer_in_chromium(browser, live, series_dirs, tmp_path) -> None:
    for series_dir in series_dirs:
        r = httpx.post(f"{live}/v1/analyses", files=multipart(series_files(series_dir)),
                       timeout=60)
        assert r.status_code == 201
        if r.json()["scar_percent"] > 2.0:
            break
    report = r.json()
    _, scar = seg_masks(httpx.get(f"{live}/v1/analyses/{report['id']}/seg").content, report)
    k = int(np.argmax(scar.sum(axis=(1, 2))))

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(f"{live}/v1/analyses/{report['id']}/viewer")
    page.wait_for_load_state("networkidle")
    assert "synthetic phantoms" in page.locator(".banner").inner_text()
    assert page.locator("svg.bullseye path").count() == 16
    # It opens on the slice with the most scar; the arrows step from there.
    page.wait_for_function("document.getElementById('overlay').complete")
    assert page.locator("#slice-label").inner_text().startswith(f"slice {k + 1} of ")
    step = -1 if k > 0 else 1
    page.keyboard.press("ArrowLeft" if step < 0 else "ArrowRight")
    assert page.locator("#slice-label").inner_text().startswith(f"slice {k + 1 + step} of ")
    page.keyboard.press("ArrowRight" if step < 0 else "ArrowLeft")
    page.wait_for_function("document.getElementById('overlay').complete")
    assert page.locator("#slice-label").inner_text().startswith(f"slice {k + 1} of ")
    assert page.locator("tr.current td").first.inner_text() == str(k + 1)
    page.wait_for_load_state("networkidle")
    shown = _png(page.locator("#overlay").screenshot())
    page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)

    # The viewer zooms to the heart: the overlay says which source pixels it shows.
    src = page.evaluate("document.getElementById('overlay').src")
    y0, x0, y1, x1 = map(int, httpx.get(src).headers["x-overlay-box"].split(","))
    assert (y1 - y0) < scar.shape[1] or (x1 - x0) < scar.shape[2]
    sy, sx = shown.shape[0] / (y1 - y0), shown.shape[1] / (x1 - x0)
    assert sy == pytest.approx(sx, rel=0.02) and sy >= 2  # square pixels, enlarged
    ys, xs = np.nonzero(ndimage.binary_erosion(scar[k], iterations=1))
    at = ((ys - y0 + 0.5) * sy).astype(int), ((xs - x0 + 0.5) * sx).astype(int)
    on_scar = shown[at]
    assert len(on_scar) and _orange(on_scar).mean() > 0.9

    page.click("#show-scar")  # toggle the scar off: the same pixels go grey
    page.wait_for_function("document.getElementById('overlay').src.includes('scar=0')")
    page.wait_for_load_state("networkidle")
    page.wait_for_function("document.getElementById('overlay').complete")
    hidden = _png(page.locator("#overlay").screenshot())
    off_scar = hidden[at]
    assert _orange(off_scar).mean() < 0.05
    # Where the networks disagree: a layer the reader toggles, drawn in its own colour.
    page.click("#disagreement")
    page.wait_for_function(
        "document.getElementById('overlay').src.includes('disagreement=1')")
    page.wait_for_load_state("networkidle")
    page.wait_for_function("document.getElementById('overlay').complete "
                           "&& document.getElementById('overlay').naturalWidth > 0")
    layered = _png(page.locator("#overlay").screenshot())
    assert _purple(layered).sum() > _purple(hidden).sum() + 20
    page.keyboard.press("ArrowLeft")
    assert page.locator("#slice-label").inner_text().startswith(f"slice {max(k, 1)} of ")
    assert problems == []

    index = browser.new_page()
    index.goto(f"{live}/")
    assert index.locator(f"a[href='/v1/analyses/{report['id']}/viewer']").count() == 1
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS"):
        docs = REPO / "docs"
        shutil.copy(tmp_path / "viewer.png", docs / "viewer.png")
        Image.fromarray(shown.astype(np.uint8)).save(docs / "overlay.png")
    assert SCAR_RGB != MYOCARDIUM_RGB


def test_the_viewer_opens_on_the_most_scar_and_names_whose_scan_it_is(client, scarred) -> None:
    from service.viewer.pages import start_slice

    html = client.get(f"/v1/analyses/{scarred['id']}/viewer").text
    k = start_slice(scarred["slices"])
    areas = [s["scar_area_mm2"] for s in scarred["slices"]]
    assert areas[k] == max(areas) > 0
    assert f'src="overlay/{k}.png?zoom=1"' in html and f"slice {k + 1} of" in html
    seg = pydicom.dcmread(io.BytesIO(client.get(f"/v1/analyses/{scarred['id']}/seg").content))
    assert str(seg.PatientID) in html
    assert str(seg.PatientName).replace("^", " ").strip() in html
    assert start_slice([{"scar_area_mm2": 0.0, "myocardium_area_mm2": a} for a in (5, 9, 2)]) == 1
