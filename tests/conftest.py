"""Shared fixtures: phantom series are made on the fly, never shipped."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient

from training.data.phantoms import generate_one

PHANTOM_SEED = 20261124


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six small phantom series written to disk (seeded, so identical every run)."""
    out = tmp_path_factory.mktemp("phantoms")
    for index in range(6):
        generate_one(PHANTOM_SEED, index, out)
    return out


@pytest.fixture(scope="session")
def many_series_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Twenty-four series for statistics over slices (a different seed from the above)."""
    out = tmp_path_factory.mktemp("phantoms_many")
    for index in range(24):
        generate_one(PHANTOM_SEED + 1, index, out)
    return sorted(out.glob("phantom_*"))


@pytest.fixture(scope="session")
def series_dirs(phantom_dir: Path) -> list[Path]:
    return sorted(phantom_dir.glob("phantom_*"))


def shipped_onnx(name: str) -> Path:
    """The shipped file of a manifest entry (its first member's where several ship), so a
    test reads the released networks whatever the release names its files."""
    import json

    models = Path(__file__).resolve().parents[1] / "models"
    manifest = json.loads((models / "manifest.json").read_text())
    return models / next(m["file"] for m in manifest["models"] if m["name"] == name)


def read_series(series_dir: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted((series_dir / "dicom").glob("*.dcm"))]


def to_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def series_files(series_dir: Path) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted((series_dir / "dicom").glob("*.dcm"))]


def multipart(files: list[tuple[str, bytes]]) -> list:
    return [("files", (name, data, "application/dicom")) for name, data in files]


def related_body(files: list[tuple[str, bytes]], boundary: str = "dicomboundary") -> bytes:
    parts = [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
             for _, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def require_tool(name: str) -> str:
    """Path of an external tool; in CI a missing tool fails instead of skipping."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; .ci/run must install it")
        pytest.skip(f"{name} is not installed")
    return path


@pytest.fixture(scope="session", autouse=True)
def _isolated_result_store(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The app writes results to one temporary store per test session, never to var/."""
    os.environ["DATA_DIR"] = str(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="session", autouse=True)
def _one_registry_per_models_folder():
    """The apps of the suite share their registry: the release's ten ENet sessions take
    seconds to make and over a hundred apps start. Same folder and options, same registry
    (its sessions are thread-safe and immutable); a test of loading itself calls
    ``load_registry`` directly or copies the models elsewhere, and so loads afresh."""
    import functools

    import service.api.app as app_module

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app_module, "load_registry",
                      functools.cache(app_module.load_registry))
        yield


@pytest.fixture(autouse=True)
def _fresh_settings():
    """Settings are cached per process; a test that changes the environment must not leak."""
    from service.config import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout_s: float, what: str):
    """Poll ``condition`` (exceptions count as not yet) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # noqa: BLE001 - a server still starting refuses connections
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_service(data_dir: Path, log_path: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """``python -m service`` as a real process on a free loopback port; (process, base URL)."""
    import httpx

    port = free_port()
    environment = os.environ | {"HOST": "127.0.0.1", "PORT": str(port),
                                "DATA_DIR": str(data_dir)} | env
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "service"], env=environment,
                                   stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: process.poll() is None
                   and httpx.get(f"{url}/readyz").status_code == 200, 60, "the service")
    except AssertionError:
        stop_process(process)
        raise AssertionError(log_path.read_text(errors="replace")[-3000:]) from None
    return process, url


@pytest.fixture(scope="module")
def client():
    """The app on the session's result store, one per test module that asks for it.

    A module that needs other settings defines its own ``client``.
    """
    from service.api.app import create_app

    with TestClient(create_app()) as c:
        yield c


@pytest.fixture
def make_client(tmp_path, monkeypatch):
    """A TestClient on its own result store and inbox, with short STOW-RS timings."""

    from service.api.app import create_app
    from service.config import get_settings

    def make(**env: str) -> TestClient:
        settings = {"DATA_DIR": str(tmp_path / "data"), "STOW_QUIET_PERIOD_S": "0.3",
                    "BACKGROUND_POLL_S": "0.05"} | env
        for key, value in settings.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        return TestClient(create_app())

    return make


# Report fields that differ between two analyses of the same series.
VOLATILE = {"id", "created_at", "timings_ms", "seg_series_instance_uid", "seg_sop_instance_uid",
            "sr_sop_instance_uid"}


# STOW-RS from a test client, and waiting for what it starts.
RELATED = 'multipart/related; type="application/dicom"; boundary=dicomboundary'
REFERENCED, FAILED, FAILURE_REASON, SOP_INSTANCE = "00081199", "00081198", "00081197", "00081155"


def wait_for(condition: Callable[[], object], timeout_s: float = 60.0, what: str = ""):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or condition}")


def stow(client: TestClient, files: list[tuple[str, bytes]], path: str = "/dicomweb/studies"):
    return client.post(path, content=related_body(files), headers={"Content-Type": RELATED})


def series_uid_of(files: list[tuple[str, bytes]]) -> str:
    return str(pydicom.dcmread(io.BytesIO(files[0][1]), stop_before_pixels=True)
               .SeriesInstanceUID)


def settled(client: TestClient, series_uid: str, analyses: int = 1) -> dict:
    """The received series once it has ``analyses`` analyses and is no longer busy."""
    def check():
        r = client.get(f"/v1/series/{series_uid}")
        state = r.json() if r.status_code == 200 else {}
        if state.get("state") == "failed" or (state.get("state") == "done"
                                              and len(state["analyses"]) >= analyses):
            return state
        return None
    return wait_for(check, what=f"series {series_uid} to be analysed")


@pytest.fixture(scope="session")
def cored_series_dir(series_dirs: list[Path]) -> Path:
    """The first test phantom whose scar has a core for :func:`truth_seg`'s MVO."""
    for series_dir in series_dirs:
        if truth_seg(series_dir)[1][2].sum() >= 20:
            return series_dir
    raise AssertionError("no test phantom has a scar thick enough for an MVO core")


def truth_seg(series_dir: Path):
    """The service's SEG encoder on a phantom's truth, all three segments drawn.

    The MVO is the scar's core (one pixel in), so the third segment is present on
    every slice with scar whatever the shipped models call. Returns the volume,
    the (myocardium, scar, MVO) masks in its slice order, and the SEG dataset.
    """
    import numpy as np
    from scipy import ndimage

    from service.dicom.seg import build_seg
    from service.pipeline.volume import build_volume
    from training.data.phantoms import load_truth

    volume = build_volume(read_series(series_dir))
    truth = load_truth(series_dir)
    myocardium = np.stack([truth[s.sop_instance_uid]["myocardium"] for s in volume.slices]) > 0
    scar = np.stack([truth[s.sop_instance_uid]["scar"] for s in volume.slices]) > 0
    mvo = ndimage.binary_erosion(scar, structure=ndimage.generate_binary_structure(2, 1)[None])
    masks = (myocardium, scar, mvo)
    return volume, masks, build_seg(volume.slices, *masks, "cascade-unet", "test")


@pytest.fixture()
def held_encoding(monkeypatch: pytest.MonkeyPatch):
    """The SEG/SR encoder waits (at most 30 s) until the returned event is set: a test can
    look at an analysis answered but not yet encoded. Set on teardown, so nothing hangs."""
    import threading

    from service import encoding

    release = threading.Event()
    original = encoding.encode_stored

    def held(report, files):
        release.wait(30)
        return original(report, files)

    monkeypatch.setattr(encoding, "encode_stored", held)
    release.original = original  # the encoder itself, for a test's expected bytes
    yield release
    release.set()
