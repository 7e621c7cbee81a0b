"""The Dockerfile and the compose files, checked statically.

tests/test_container.py builds and runs the CPU image and the offline compose with
podman; the CUDA image and the production compose (registry images, a GPU) are
checked here only.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def _instructions(text: str) -> list[tuple[str, str, int]]:
    """(INSTRUCTION, arguments, stage index) with continuation lines joined.

    ARGs before the first FROM are global (stage -1); FROM's ${ARG} is replaced by
    its default, so a stage's base reads as the image it is by default.
    """
    joined = re.sub(r"\\\n", " ", text)
    out, stage, defaults = [], -1, {}
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if word.upper() == "ARG" and stage == -1 and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name] = value
        if word.upper() == "FROM":
            stage += 1
            rest = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), rest)
        out.append((word.upper(), rest, stage))
    return out


def _stage(dockerfile, name: str) -> int:
    return next(stage for word, args, stage in dockerfile
                if word == "FROM" and args.split()[-1] == name)


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str, int]]:
    return _instructions((REPO / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _published(ports: list[str], container: int) -> str:
    """The host side of the port mapping to ``container``, its ${VAR:-default} resolved."""
    for mapping in ports:
        host, _, inner = mapping.rpartition(":")
        if inner == str(container):
            return re.sub(r"\$\{\w+:-(\w+)\}", r"\1", host)
    raise AssertionError(f"port {container} is not published: {ports}")


def test_dockerfile_is_multi_stage_on_a_cuda_cudnn_runtime(dockerfile) -> None:
    bases = [args for word, args, _ in dockerfile if word == "FROM"]
    assert len(bases) >= 3
    # The default target (the last stage) is the CUDA image, as before.
    runtime = bases[-1].split()[0]
    assert runtime.startswith("nvidia/cuda:12.") and "cudnn" in runtime and "runtime" in runtime
    assert bases[-1].split()[-1] == "cuda"
    # The interpreter matches the one the wheels are built for and pyproject allows.
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert ">=3.11" in requires and "<3.12" in requires
    assert bases[0].startswith("python:3.11")
    assert bases[_stage(dockerfile, "cpu")].startswith("python:3.11-slim-bookworm ")
    last = len(bases) - 1
    assert any("python3.11" in args for word, args, stage in dockerfile
               if word == "RUN" and stage == last)


def test_the_base_images_are_build_arguments_with_todays_defaults() -> None:
    text = (REPO / "Dockerfile").read_text()
    defaults = dict(re.findall(r"^ARG (\w+_BASE)=(\S+)$", text, re.M))
    assert defaults == {"BUILD_BASE": "python:3.11-slim-bookworm",
                        "CPU_BASE": "python:3.11-slim-bookworm",
                        "CUDA_BASE": "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04"}
    stages: set[str] = set()
    for base, name in re.findall(r"^FROM (\S+) AS (\S+)$", text, re.M):
        # Every stage starts from a base argument or from an earlier stage.
        assert base in {f"${{{arg}}}" for arg in defaults} or base in stages, base
        stages.add(name)
    assert {"build", "cpu", "build-cuda", "cuda"} <= stages


def test_the_images_install_no_tensorflow_and_the_right_onnxruntime(dockerfile) -> None:
    installs = " ".join(args for word, args, _ in dockerfile if word == "RUN")
    assert "onnxruntime-gpu==" in installs
    # What pip is given (the python -c checks that TensorFlow is absent left out).
    pip = re.sub(r'python -c "[^"]*"', "", installs)
    assert not re.search(r"tensorflow|keras|tf2onnx|\[train|\[dev", pip, re.IGNORECASE)
    # The CPU image takes the wheelhouse with onnxruntime, the CUDA one the swapped one.
    copies = {stage: args for word, args, stage in dockerfile
              if word == "COPY" and args.startswith("--from=")}
    assert copies[_stage(dockerfile, "cpu")].startswith("--from=build ")
    assert copies[_stage(dockerfile, "cuda")].startswith("--from=build-cuda ")
    build_cuda = " ".join(args for word, args, stage in dockerfile
                          if word == "RUN" and stage == _stage(dockerfile, "build-cuda"))
    assert "onnxruntime-gpu==" in build_cuda
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"runs", ".git", "tests", "var"} <= set(ignored)
    assert (REPO / "deploy" / "wheelhouse").is_dir()


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_each_runtime_runs_as_a_user_with_a_healthcheck(dockerfile, target) -> None:
    stage = _stage(dockerfile, target)
    runtime = [(word, args) for word, args, s in dockerfile if s == stage]
    users = [args for word, args in runtime if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    health = [args for word, args in runtime if word == "HEALTHCHECK"]
    # Python's urllib: the debootstrap base of the offline CPU image has no curl.
    assert health and "/healthz" in health[0] and "python -c" in health[0]
    assert "curl" not in health[0]
    assert ("EXPOSE", "8000") in runtime
    cmd = [args for word, args in runtime if word == "CMD"][-1]
    assert json.loads(cmd) == ["python", "-m", "service"]
    assert any(word == "COPY" and args.split()[0] == "models" for word, args in runtime)
    env = " ".join(args for word, args in runtime if word == "ENV")
    assert "EXECUTION_PROVIDER=auto" in env and "DATA_DIR=/data" in env
    # The version: a build argument, checked against the package, kept as the OCI label.
    assert ("ARG", "VERSION") in runtime
    labels = " ".join(args for word, args in runtime if word == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert any("install-service.sh" in args and '"$VERSION"' in args
               for word, args in runtime if word == "RUN")
    script = (REPO / "deploy" / "install-service.sh").read_text()
    assert "service.__version__" in script and "useradd --create-home --uid 10001 lge" in script


def test_no_version_is_written_into_the_container_files(compose) -> None:
    """The version is the package's (service/__init__.py), passed in as VERSION."""
    import service

    for path in ("Dockerfile", "docker-compose.yml", "deploy/compose.offline.yml"):
        text = (REPO / path).read_text()
        assert not re.search(r"dblge-scar:\d", text), path
        assert service.__version__ not in text, path
    lge = compose["services"]["lge"]
    assert lge["build"]["args"]["VERSION"].startswith("${LGE_VERSION:?")
    assert lge["image"].startswith("dblge-scar:${LGE_VERSION:?")
    printed = subprocess.run(["sh", str(REPO / "deploy" / "version.sh")], capture_output=True,
                             text=True, timeout=30, check=True).stdout.strip()
    assert printed == service.__version__


def test_compose_reserves_the_gpu_and_persists_both_stores(compose) -> None:
    lge, orthanc = compose["services"]["lge"], compose["services"]["orthanc"]
    devices = lge["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    named = set(compose["volumes"])
    assert any(v.split(":")[0] in named and v.split(":")[1] == "/data" for v in lge["volumes"])
    assert any(v.split(":")[0] in named and v.split(":")[1] == "/var/lib/orthanc/db"
               for v in orthanc["volumes"])
    assert _published(lge["ports"], 8000) == "8000"
    assert _published(orthanc["ports"], 8042) == "8042"
    assert _published(orthanc["ports"], 4242) == "4242"
    assert lge["environment"]["DICOMWEB_STORE_URL"] == "http://orthanc:8042/dicom-web"
    # The production file keeps the official Orthanc image.
    assert orthanc["image"].startswith("orthancteam/orthanc:")


def test_the_offline_override_runs_the_cpu_image_and_debians_orthanc(compose) -> None:
    text = (REPO / "deploy" / "compose.offline.yml").read_text()
    override = yaml.safe_load(text)
    assert set(override["services"]) == {"lge", "orthanc"}  # no OHIF: it needs registries
    lge, orthanc = override["services"]["lge"], override["services"]["orthanc"]
    assert re.fullmatch(r"localhost/dblge-scar:\$\{LGE_VERSION:\?[^}]*\}-cpu", lge["image"])
    assert orthanc["image"] == "localhost/dblge-orthanc:bookworm"
    script = (REPO / "deploy" / "offline-image.sh").read_text()
    assert "--network=none" in script and "--format docker" in script
    assert "--target cpu" in script and "debootstrap" in script and "[train]" in script
    # The tag its usage builds is the tag it runs.
    assert "deploy/offline-image.sh localhost/dblge-scar:$LGE_VERSION-cpu" in text
    containerfile = (REPO / "deploy" / "orthanc" / "Containerfile").read_text()
    assert "orthanc-dicomweb" in containerfile
    assert "USER orthanc" in containerfile
    entrypoint = (REPO / "deploy" / "orthanc" / "entrypoint.sh").read_text()
    assert '"Plugins": ["/usr/share/orthanc/plugins"]' in entrypoint
    assert "ORTHANC__REGISTERED_USERS" in entrypoint
    # Orthanc's environment in the production file is what the entrypoint reads.
    assert "ORTHANC__REGISTERED_USERS" in compose["services"]["orthanc"]["environment"]


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
    assert ohif["build"] == "./deploy/ohif" and _published(ohif["ports"], 3000) == "3000"
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
