"""The CUDA check, ready to run on a lent GPU: provider really used, parity with the CPU, latency.

One command, a few minutes:

    EXECUTION_PROVIDER=cuda python benchmarks/gpu.py

1. Every model's session runs on ``CUDAExecutionProvider`` (not a silent CPU fallback).
2. Parity: every pipeline on the same series on CPU and on CUDA; the masks agree on at
   least 99.9 % of pixels and the probabilities within 1e-3.
3. Latency: POST to stored report (ASGI in-process, as ``latency.py``) for 12 and 48
   slices of 256x256; and per network, the session alone with and without I/O binding
   (inputs and outputs bound to device memory) and in float16, to say which helps.

Writes ``benchmarks/results/gpu.json`` and the GPU section of ``BENCHMARKS.md``. Without a
CUDA provider it says so and exits 0 (the project builds and tests without a GPU).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
MASK_AGREEMENT = 0.999
PROBABILITY_TOLERANCE = 1e-3
RUNS = 20


def _series_volume(tmp: Path, n_slices: int):
    import pydicom
    from latency import benchmark_series

    from service.pipeline.volume import build_volume

    folder = benchmark_series(tmp / f"s{n_slices}", n_slices=n_slices)
    return folder, build_volume([pydicom.dcmread(p) for p in (folder / "dicom").glob("*.dcm")])


def _parity(volume, cpu, gpu) -> dict:
    from service.pipeline.segment import segment

    out = {}
    for name in cpu.pipelines:
        a = segment(volume.images, volume.spacing, cpu.pipelines[name].myocardium.network,
                    cpu.pipelines[name].scar.network)
        b = segment(volume.images, volume.spacing, gpu.pipelines[name].myocardium.network,
                    gpu.pipelines[name].scar.network)
        agreement = min(float((getattr(a, m) == getattr(b, m)).mean())
                        for m in ("myocardium", "scar", "mvo"))
        diff = max(float(np.abs(getattr(a, p) - getattr(b, p)).max()) for p in (
            "myocardium_probability", "scar_probability", "mvo_probability"))
        out[name] = {"mask_agreement": agreement, "max_probability_diff": diff,
                     "met": agreement >= MASK_AGREEMENT and diff <= PROBABILITY_TOLERANCE}
    return out


def _post_latency(folder: Path) -> dict:
    from fastapi.testclient import TestClient
    from latency import upload_files

    from service.api.app import create_app

    files = upload_files(folder)
    out = {}
    with TestClient(create_app()) as client:
        for pipeline in ("cascade-unet", "enet", "enet-raw"):
            walls = []
            for k in range(RUNS + 3):
                t0 = time.perf_counter()
                r = client.post(f"/v1/analyses?pipeline={pipeline}", files=files)
                if r.status_code != 201:
                    raise RuntimeError(f"{pipeline}: {r.status_code} {r.text}")
                if k >= 3:  # warm-up runs left out
                    walls.append((time.perf_counter() - t0) * 1000.0)
            out[pipeline] = {"p50_ms": statistics.median(walls),
                             "p95_ms": float(np.percentile(walls, 95))}
    return out


def _session_variants(model_path: Path, batch: np.ndarray) -> dict:
    """The network alone on CUDA: plain run, I/O binding, float16 (where it converts)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CUDAExecutionProvider"]
    plain = ort.InferenceSession(str(model_path), options, providers=providers)
    name = plain.get_inputs()[0].name

    def timed(run) -> float:
        for _ in range(3):
            run()
        times = []
        for _ in range(RUNS):
            t0 = time.perf_counter()
            run()
            times.append((time.perf_counter() - t0) * 1000.0)
        return statistics.median(times)

    out = {"run_ms": timed(lambda: plain.run(None, {name: batch}))}
    binding = plain.io_binding()
    device_input = ort.OrtValue.ortvalue_from_numpy(batch, "cuda", 0)
    binding.bind_ortvalue_input(name, device_input)
    binding.bind_output(plain.get_outputs()[0].name, "cuda")
    out["io_binding_ms"] = timed(lambda: plain.run_with_iobinding(binding))
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        half = convert_float_to_float16(onnx.load(str(model_path)), keep_io_types=True)
        fp16 = ort.InferenceSession(half.SerializeToString(), options, providers=providers)
        out["fp16_ms"] = timed(lambda: fp16.run(None, {name: batch}))
        reference = plain.run(None, {name: batch})[0]
        out["fp16_max_probability_diff"] = float(
            np.abs(fp16.run(None, {name: batch})[0] - reference).max())
    except Exception as exc:  # noqa: BLE001 - reported, not fatal: fp16 is an option
        out["fp16_error"] = f"{type(exc).__name__}: {exc}"[:200]
    return out


def main() -> int:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print("no CUDA: onnxruntime offers only", ort.get_available_providers(),
              "- nothing measured (run this on a GPU machine with onnxruntime-gpu)")
        return 0
    os.environ["EXECUTION_PROVIDER"] = "cuda"
    from latency import write_section

    from service.pipeline.registry import load_registry

    models = ROOT / "models"
    cpu = load_registry(models, "cpu")
    gpu = load_registry(models, "cuda")
    providers = {m.name: m.execution_provider for m in gpu.models.values()}
    on_cuda = all(p == "CUDAExecutionProvider" for p in providers.values())
    results: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                     "machine": f"{platform.node()}, {os.cpu_count()} CPU cores",
                     "onnxruntime": ort.__version__, "providers": providers,
                     "all_on_cuda": on_cuda, "series": {}}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("DATA_DIR", str(Path(tmp) / "results"))
        for n_slices in (12, 48):
            folder, volume = _series_volume(Path(tmp), n_slices)
            results["series"][n_slices] = {"parity": _parity(volume, cpu, gpu),
                                           "post_to_report": _post_latency(folder)}
            print(json.dumps({n_slices: results["series"][n_slices]}, indent=1))
        results["sessions"] = {}
        for entry in json.loads((models / "manifest.json").read_text())["models"]:
            shape = entry["input"]["shape"][1:]
            batch = np.random.default_rng(0).normal(size=(12, *shape)).astype(np.float32)
            results["sessions"][entry["name"]] = _session_variants(models / entry["file"], batch)
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "results" / "gpu.json").write_text(json.dumps(results, indent=1))
    rows = "\n".join(
        f"| {n} | {p} | {r['post_to_report'][p]['p50_ms']:.0f} | "
        f"{r['post_to_report'][p]['p95_ms']:.0f} | {r['parity'][p]['mask_agreement']:.5f} | "
        f"{r['parity'][p]['max_probability_diff']:.1e} |"
        for n, r in results["series"].items() for p in r["post_to_report"])
    nan = float("nan")
    sessions = "\n".join(
        f"| {name} | {s['run_ms']:.1f} | {s['io_binding_ms']:.1f} | "
        f"{s.get('fp16_ms', nan):.1f} | {s.get('fp16_max_probability_diff', nan):.1e} |"
        for name, s in results["sessions"].items())
    write_section(
        f"## GPU ({results['date'][:10]})\n\n`EXECUTION_PROVIDER=cuda python benchmarks/gpu.py` "
        f"on {results['machine']}, onnxruntime {ort.__version__}; every model on CUDA: "
        f"{'yes' if on_cuda else '**no**'}.\n\n"
        "| slices | pipeline | POST-to-report p50 ms | p95 ms | mask agreement with CPU | "
        "max probability diff |\n|---|---|---|---|---|---|\n" + rows +
        "\n\nThe session alone, 12 slices (ms): plain run, inputs and outputs bound on the "
        "device, float16.\n\n| model | run | I/O binding | fp16 | fp16 max diff |\n"
        "|---|---|---|---|---|\n" + sessions, "gpu")
    parity_ok = all(p["met"] for r in results["series"].values() for p in r["parity"].values())
    return 0 if on_cuda and parity_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
