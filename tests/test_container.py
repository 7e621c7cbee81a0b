"""The CPU image, built air-gapped with podman and run as a user would; the compose file.

Builds ``--target cpu`` with ``deploy/offline-image.sh`` (a debootstrap base with
Debian's Python, a host-made wheelhouse, ``--network=none``), then: ``/readyz`` within
60 s, one POST of a phantom series, the same scar % as the service in this process,
the SEG readable, the process not root, the result still there after ``podman
restart``, the HEALTHCHECK passing. Then ``podman-compose`` brings up the service
beside Orthanc built from Debian's packages (``deploy/compose.offline.yml``) and a
series stored into Orthanc with C-STORE comes back as a SEG and an SR.

Podman runs as root with runc and cgroupfs, from a containers.conf of the test's own;
the base root, the wheelhouse and the image layers are cached (``var/offline``, the
podman store) so a second run rebuilds only what changed.
"""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

import highdicom as hd
import httpx
import pydicom
import pytest

import service
from tests.conftest import free_port, multipart, require_tool, series_files, wait_until

REPO = Path(__file__).resolve().parent.parent
VERSION = service.__version__
CPU_IMAGE = f"localhost/dblge-scar:{VERSION}-cpu"  # the tag deploy/compose.offline.yml runs
ORTHANC_IMAGE = "localhost/dblge-orthanc:bookworm"
API_KEY, ORTHANC_PASSWORD = "container-test-key", "container-test-password"
AUTH = {"Authorization": f"Bearer {API_KEY}"}

pytestmark = pytest.mark.slow


def say(request: pytest.FixtureRequest, message: str) -> None:
    """Progress into the CI log, past pytest's capture."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        sys.stderr.write(f"\n[container] {message}\n")
        sys.stderr.flush()


def run(args: list[str], env: dict[str, str], timeout: float,
        check: bool = True) -> subprocess.CompletedProcess:
    """A bounded command; its output in the failure message."""
    try:
        done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{args[:4]} did not finish in {timeout} s:\n"
                             f"{(e.stdout or b'')[-3000:]!r}\n{(e.stderr or b'')[-3000:]!r}") \
            from None
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n"
                             f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory) -> dict[str, str]:
    """Environment for podman as root with runc and cgroupfs, within this host's limits.

    Podman sets open files and processes to 1048576 by default (also with --ulimit
    host, as root), which runc may not set where the container tools lack
    CAP_SYS_RESOURCE: the host's own open-files limit and 32768 processes instead.
    """
    for tool in ("podman", "runc", "debootstrap"):
        require_tool(tool)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n')
    return os.environ | {"CONTAINERS_CONF": str(conf), "ENGINE": "podman", "PULL": "0"}


def build(env: dict[str, str], *args: str) -> float:
    started = time.monotonic()
    run(["bash", "deploy/offline-image.sh", *args], env, timeout=1200)
    return time.monotonic() - started


def image_mib(env: dict[str, str], image: str) -> float:
    size = run(["podman", "image", "inspect", "-f", "{{.Size}}", image], env, 60).stdout
    return int(size) / 2**20


@pytest.fixture(scope="module")
def cpu_image(request, podman_env) -> str:
    seconds = build(podman_env, CPU_IMAGE)
    say(request, f"built {CPU_IMAGE} in {seconds:.0f} s (debootstrap base, host wheelhouse, "
                 f"--network=none): {image_mib(podman_env, CPU_IMAGE):.0f} MiB")
    # Images left behind by older builds (each change of service/ makes a new one); the
    # layers of the current build are younger than this and stay as the cache.
    run(["podman", "image", "prune", "-f", "--filter", "until=72h"], podman_env, 300,
        check=False)
    return CPU_IMAGE


@pytest.fixture(scope="module")
def orthanc_image(request, podman_env) -> str:
    seconds = build(podman_env, "--orthanc", ORTHANC_IMAGE)
    say(request, f"built {ORTHANC_IMAGE} in {seconds:.0f} s: "
                 f"{image_mib(podman_env, ORTHANC_IMAGE):.0f} MiB")
    return ORTHANC_IMAGE


def test_the_image_carries_the_package_version_and_no_tensorflow(cpu_image, podman_env) -> None:
    inspect = json.loads(run(["podman", "image", "inspect", cpu_image], podman_env, 60).stdout)
    config = inspect[0]["Config"]
    assert config["Labels"]["org.opencontainers.image.version"] == VERSION
    assert config["User"] == "lge"
    # Docker's format: the HEALTHCHECK is in the image (OCI's would drop it). Podman
    # shows it beside Config.
    health = inspect[0].get("Healthcheck") or config.get("Healthcheck")
    assert health and "/healthz" in " ".join(health["Test"])
    probe = ("import importlib.util, json, os, onnxruntime, service, service.api.app; "
             "print(json.dumps({'version': service.__version__, 'uid': os.getuid(), "
             "'providers': onnxruntime.get_available_providers(), "
             "'tensorflow': importlib.util.find_spec('tensorflow') is not None}))")
    out = run(["podman", "run", "--rm", cpu_image, "python", "-c", probe], podman_env, 120)
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert facts["version"] == VERSION
    assert facts["uid"] == 10001
    assert "CPUExecutionProvider" in facts["providers"]
    assert not any("CUDA" in p for p in facts["providers"])
    assert facts["tensorflow"] is False


def _wait_ready(url: str, timeout_s: float) -> float:
    started = time.monotonic()
    wait_until(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, timeout_s,
               f"{url}/readyz")
    return time.monotonic() - started


def test_the_cpu_image_serves_a_series_as_the_service_here_does(
        request, cpu_image, podman_env, series_dirs, make_client) -> None:
    name, volume = f"lge-test-{uuid.uuid4().hex[:8]}", f"lge-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = podman_env
    try:
        run(["podman", "volume", "create", volume], env, 60)
        started = time.monotonic()
        run(["podman", "run", "-d", "--name", name, "-e", f"API_KEY={API_KEY}",
             "-p", f"127.0.0.1:{port}:8000", "-v", f"{volume}:/data", cpu_image], env, 120)
        _wait_ready(url, 60)
        say(request, f"/readyz 200 after {time.monotonic() - started:.1f} s from podman run")

        files = series_files(series_dirs[0])
        posted = httpx.post(f"{url}/v1/analyses", files=multipart(files), headers=AUTH,
                            timeout=120)
        assert posted.status_code == 201, posted.text
        report = posted.json()
        say(request, f"analysis in the container: {report['timings_ms']['total']:.0f} ms, "
                     f"scar {report['scar_percent']:.3f} %")

        # The same series through the service in this process: the same measurement.
        with make_client() as here:
            local = here.post("/v1/analyses", files=multipart(files))
        assert local.status_code == 201, local.text
        assert report["scar_percent"] == pytest.approx(local.json()["scar_percent"], abs=1e-6)
        assert report["myocardium_volume_ml"] == pytest.approx(
            local.json()["myocardium_volume_ml"], abs=1e-6)
        assert report["execution_provider"] == "CPUExecutionProvider"

        seg = httpx.get(f"{url}/v1/analyses/{report['id']}/seg", headers=AUTH, timeout=30)
        assert seg.status_code == 200
        seg_ds = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(seg.content)))
        assert seg_ds.SOPInstanceUID == report["seg_sop_instance_uid"]
        assert [s.SegmentLabel for s in seg_ds.SegmentSequence] == ["Myocardium", "Scar", "MVO"]

        # The service itself (PID 1) runs as lge, not root.
        status = run(["podman", "exec", name, "cat", "/proc/1/status"], env, 60).stdout
        uids = next(line.split()[1:] for line in status.splitlines()
                    if line.startswith("Uid:"))
        assert set(uids) == {"10001"}

        # The image's HEALTHCHECK passes (podman runs it on demand: no systemd timers here).
        health = run(["podman", "healthcheck", "run", name], env, 60, check=False)
        assert health.returncode == 0, health.stdout + health.stderr

        # The result lives in the volume: still there after a restart.
        started = time.monotonic()
        run(["podman", "restart", name], env, 120)
        _wait_ready(url, 60)
        say(request, f"/readyz 200 after {time.monotonic() - started:.1f} s from podman restart")
        again = httpx.get(f"{url}/v1/analyses/{report['id']}", headers=AUTH, timeout=30)
        assert again.status_code == 200 and again.json() == report
    except BaseException:
        logs = run(["podman", "logs", name], env, 60, check=False)
        sys.stderr.write(f"--- container log (tail) ---\n{(logs.stdout + logs.stderr)[-4000:]}\n")
        raise
    finally:
        run(["podman", "rm", "-f", "-v", name], env, 120, check=False)
        run(["podman", "volume", "rm", "-f", volume], env, 60, check=False)


def _storescu(files: list[Path], port: int, env: dict[str, str]) -> None:
    run([require_tool("storescu"), "-aec", "ORTHANC", "-aet", "LGETEST", "127.0.0.1",
         str(port), *map(str, files)], env, 120)


def test_compose_offline_round_trip_through_orthanc(request, cpu_image, orthanc_image,
                                                    podman_env, series_dirs) -> None:
    compose_tool = require_tool("podman-compose")
    project = f"lgetest{uuid.uuid4().hex[:8]}"
    ports = {"LGE_PORT": free_port(), "ORTHANC_HTTP_PORT": free_port(),
             "ORTHANC_DICOM_PORT": free_port()}
    env = podman_env | {"LGE_VERSION": VERSION, "LGE_API_KEY": API_KEY,
                        "ORTHANC_PASSWORD": ORTHANC_PASSWORD} \
        | {k: str(v) for k, v in ports.items()}
    compose = [compose_tool, "-p", project, "-f", "docker-compose.yml",
               "-f", "deploy/compose.offline.yml"]
    orthanc = f"http://127.0.0.1:{ports['ORTHANC_HTTP_PORT']}"
    auth = ("lge", ORTHANC_PASSWORD)
    try:
        started = time.monotonic()
        run([*compose, "up", "-d", "--no-build", "lge", "orthanc"], env, 300)
        wait_until(lambda: httpx.get(f"{orthanc}/system", auth=auth).status_code == 200, 60,
                   "Orthanc in its container")
        _wait_ready(f"http://127.0.0.1:{ports['LGE_PORT']}", 60)
        say(request, f"compose: Orthanc and the service up in {time.monotonic() - started:.1f} s")

        started = time.monotonic()
        files = sorted((series_dirs[0] / "dicom").glob("*.dcm"))
        _storescu(files, ports["ORTHANC_DICOM_PORT"], env)
        mr = pydicom.dcmread(files[0], stop_before_pixels=True)
        study = httpx.post(f"{orthanc}/tools/lookup", content=mr.StudyInstanceUID,
                           auth=auth).json()
        study_id = next(item["ID"] for item in study if item["Type"] == "Study")

        def results():
            series = httpx.get(f"{orthanc}/studies/{study_id}/series", auth=auth).json()
            found = {s["MainDicomTags"].get("Modality"): s for s in series}
            return found if {"MR", "SEG", "SR"} <= set(found) else None

        # Orthanc's StableAge (20 s) and the service's STOW quiet period (10 s) first.
        found = wait_until(results, 180, "SEG and SR back in Orthanc")
        say(request, f"compose: C-STORE to SEG and SR in Orthanc in "
                     f"{time.monotonic() - started:.1f} s")
        assert len(found["MR"]["Instances"]) == len(files)
        seg_file = httpx.get(f"{orthanc}/instances/{found['SEG']['Instances'][0]}/file",
                             auth=auth)
        seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(seg_file.content)))
        assert seg.StudyInstanceUID == mr.StudyInstanceUID
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == mr.SeriesInstanceUID
        sr_file = httpx.get(f"{orthanc}/instances/{found['SR']['Instances'][0]}/file",
                            auth=auth)
        assert pydicom.dcmread(io.BytesIO(sr_file.content)).StudyInstanceUID == \
            mr.StudyInstanceUID
    except BaseException:
        for service_name in ("lge", "orthanc"):
            logs = run(["podman", "logs", f"{project}_{service_name}_1"], env, 60, check=False)
            sys.stderr.write(f"--- {service_name} log (tail) ---\n"
                             f"{(logs.stdout + logs.stderr)[-3000:]}\n")
        raise
    finally:
        run([*compose, "down", "-v"], env, 180, check=False)
        run(["podman", "network", "rm", "-f", f"{project}_default"], env, 60, check=False)
        run(["podman", "pod", "rm", "-f", f"pod_{project}"], env, 60, check=False)
