"""Shared fixtures: phantom series are made on the fly, never shipped."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pydicom
import pytest

from training.phantoms import generate_one

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


@pytest.fixture(autouse=True)
def _fresh_settings():
    """Settings are cached per process; a test that changes the environment must not leak."""
    from service.config import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
