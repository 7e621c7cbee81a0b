"""The Dockerfile and docker-compose.yml, checked statically (Docker cannot run here)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def _instructions(text: str) -> list[tuple[str, str, int]]:
    """(INSTRUCTION, arguments, stage index) with continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    out, stage = [], -1
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stage += 1
        out.append((word.upper(), rest.strip(), stage))
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str, int]]:
    return _instructions((REPO / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_dockerfile_is_multi_stage_on_a_cuda_cudnn_runtime(dockerfile) -> None:
    bases = [args for word, args, _ in dockerfile if word == "FROM"]
    assert len(bases) >= 2
    runtime = bases[-1].split()[0]
    assert runtime.startswith("nvidia/cuda:12.") and "cudnn" in runtime and "runtime" in runtime
    # The interpreter matches the one the wheels are built for and pyproject allows.
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert ">=3.11" in requires and "<3.12" in requires
    assert bases[0].startswith("python:3.11")
    last = len(bases) - 1
    assert any("python3.11" in args for word, args, stage in dockerfile
               if word == "RUN" and stage == last)


def test_the_runtime_image_installs_no_tensorflow_and_onnxruntime_gpu(dockerfile) -> None:
    installs = " ".join(args for word, args, _ in dockerfile if word == "RUN")
    assert "onnxruntime-gpu==" in installs
    assert not re.search(r"tensorflow|keras|tf2onnx|\[train|\[dev", installs, re.IGNORECASE)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"runs", ".git", "tests"} <= set(ignored)


def test_the_runtime_runs_as_a_user_with_a_healthcheck(dockerfile) -> None:
    last = max(stage for *_, stage in dockerfile)
    runtime = [(word, args) for word, args, stage in dockerfile if stage == last]
    users = [args for word, args in runtime if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    health = [args for word, args in runtime if word == "HEALTHCHECK"]
    assert health and "/healthz" in health[0]
    assert ("EXPOSE", "8000") in runtime
    cmd = [args for word, args in runtime if word == "CMD"][-1]
    assert json.loads(cmd) == ["python", "-m", "service"]
    assert any(word == "COPY" and args.split()[0] == "models" for word, args in runtime)
    env = " ".join(args for word, args in runtime if word == "ENV")
    assert "EXECUTION_PROVIDER=auto" in env and "DATA_DIR=/data" in env


def test_compose_reserves_the_gpu_and_persists_both_stores(compose) -> None:
    lge, orthanc = compose["services"]["lge"], compose["services"]["orthanc"]
    devices = lge["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    named = set(compose["volumes"])
    assert any(v.split(":")[0] in named and v.split(":")[1] == "/data" for v in lge["volumes"])
    assert any(v.split(":")[0] in named and v.split(":")[1] == "/var/lib/orthanc/db"
               for v in orthanc["volumes"])
    assert "8000:8000" in lge["ports"] and "8042:8042" in orthanc["ports"]
    assert lge["environment"]["DICOMWEB_STORE_URL"] == "http://orthanc:8042/dicom-web"


def test_compose_mounts_the_orthanc_configuration_that_the_tests_use(compose) -> None:
    orthanc = compose["services"]["orthanc"]
    mounts = {v.split(":")[1]: REPO / v.split(":")[0] for v in orthanc["volumes"]
              if v.startswith("./")}
    config = json.loads(mounts["/etc/orthanc/orthanc.json"].read_text())
    assert config == json.loads((REPO / "deploy/orthanc/orthanc.json").read_text())
    # The Lua hook is mounted where the configuration loads it from.
    assert config["LuaScripts"] == ["/etc/orthanc/forward-lge.lua"]
    assert mounts["/etc/orthanc/forward-lge.lua"].exists()
    assert "OnStableSeries" in mounts["/etc/orthanc/forward-lge.lua"].read_text()
    # Every ${VAR} the configuration reads is set for the Orthanc container.
    wanted = set(re.findall(r"\$\{(\w+)\}", mounts["/etc/orthanc/orthanc.json"].read_text()))
    assert wanted and wanted <= set(orthanc["environment"])
    assert orthanc["environment"]["LGE_SERVICE_DICOMWEB_URL"] == "http://lge:8000/dicomweb/"
    assert config["DicomWeb"]["Enable"] and config["AuthenticationEnabled"]


def test_compose_serves_ohif_over_orthancs_dicomweb_from_one_origin(compose) -> None:
    ohif = compose["services"]["ohif"]
    assert ohif["build"] == "./deploy/ohif" and "3000:3000" in ohif["ports"]
    assert "orthanc" in ohif["depends_on"]
    folder = REPO / "deploy" / "ohif"
    nginx = (folder / "nginx.conf").read_text()
    assert re.search(r"location /dicom-web/ \{\s*proxy_pass http://orthanc:8042/dicom-web/;",
                     nginx)
    assert "try_files $uri $uri/ /index.html;" in nginx
    # The image's OHIF is the one the browser test opened: the version pinned in fetch.sh.
    version = re.search(r"^VERSION=(\S+)$", (folder / "fetch.sh").read_text(), re.M).group(1)
    assert ohif["image"].endswith(f":{version}")
    assert "fetch.sh" in (folder / "Dockerfile").read_text()
    # Same-origin DICOMweb, and no other host named anywhere in the config (no CDN).
    config = (folder / "app-config.js").read_text()
    code = re.sub(r"/\*.*?\*/|//[^\n]*", "", config, flags=re.S)
    assert "window.location.origin + '/dicom-web'" in code
    assert not re.search(r"https?://", code)
