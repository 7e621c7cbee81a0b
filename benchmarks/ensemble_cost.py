"""What a fold ensemble costs the cascade, against release 0.3.2, before the release exists.

Issue 52 lets the release choose an ensemble of the fold networks out of fold, within a
budget (the cascade's p50 at most 1.5x 0.3.2's); issue 54 pays for it with int8. Speed does
not depend on the weights, so the candidates are built now from fold 0's kept legs (its last
myocardium and scar stages, ``releases/round4/legs``), each member a copy of fold 0's file
and each int8 copy calibrated on the benchmark series' own inputs (accuracy is not measured
here). Each candidate is a models folder the service's registry loads (members, int8 copies
as the manifest names them); ``service.analysis.analyse`` runs on the 12 x 256x256 latency
series, the candidates interleaved run by run with 0.3.2 as shipped (``models/``). The
ratio to 0.3.2 leaves out what both share outside ``analyse`` (decode, the encoder
inputs, the store and HTTP); the "over HTTP, about" ratio adds it to both sides, read from
the last ``latency.py`` run (``benchmarks/results/latency.json``).

    python benchmarks/ensemble_cost.py --runs 15
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
from latency import benchmark_series, host_calibration_ms, write_section

from service.analysis import analyse, warm_up
from service.pipeline.registry import load_registry, sha256_of
from service.pipeline.volume import build_volume
from training.data.dataset import TASKS
from training.data.sources import PhantomSource
from training.quantize import calibration_inputs, quantize_int8

ROOT = Path(__file__).resolve().parent.parent
LEGS = ROOT / "releases" / "round4" / "legs"
RESULTS = ROOT / "benchmarks" / "results" / "ensemble_cost.json"
LATENCY = ROOT / "benchmarks" / "results" / "latency.json"
# The cascade's two networks: manifest name, task, fold 0's last leg.
NETWORKS = {"myocardium-unet": ("myocardium_unet", "fold0-myocardium_unet-s4"),
            "scar-unet": ("scar_unet", "fold0-scar_unet-s2")}
# Candidates: per network, members and precision (0.3.2's int8 study: the scar U-Net in
# int8 moved EMIDEC's scar % past the parity bound, the myocardium U-Net alone did not).
CANDIDATES = {
    "one network each, float32": {"myocardium-unet": (1, "fp32"), "scar-unet": (1, "fp32")},
    "one network each, int8": {"myocardium-unet": (1, "int8"), "scar-unet": (1, "int8")},
    "scar x2 float32, myocardium float32": {"myocardium-unet": (1, "fp32"),
                                            "scar-unet": (2, "fp32")},
    "scar x3 float32, myocardium float32": {"myocardium-unet": (1, "fp32"),
                                            "scar-unet": (3, "fp32")},
    "scar x3 float32, myocardium int8": {"myocardium-unet": (1, "int8"),
                                         "scar-unet": (3, "fp32")},
    "scar x3 int8, myocardium int8": {"myocardium-unet": (1, "int8"), "scar-unet": (3, "int8")},
    "scar x5 float32, myocardium int8": {"myocardium-unet": (1, "int8"),
                                         "scar-unet": (5, "fp32")},
    "scar x5 int8, myocardium int8": {"myocardium-unet": (1, "int8"), "scar-unet": (5, "int8")},
    "both x3, int8": {"myocardium-unet": (3, "int8"), "scar-unet": (3, "int8")},
    "both x5, int8": {"myocardium-unet": (5, "int8"), "scar-unet": (5, "int8")},
    "both x5, float32": {"myocardium-unet": (5, "fp32"), "scar-unet": (5, "fp32")},
}


def int8_copies(series: Path, work: Path) -> dict[str, Path]:
    """Each fold-0 network's int8 copy, calibrated on the series' own inputs as the release
    calibrates (``calibration_inputs``; the scar U-Net's box from 0.3.2's ring)."""
    shipped = load_registry(ROOT / "models", "cpu", precision="fp32").pipelines["cascade-unet"]
    networks = {task: dataclasses.replace(getattr(shipped, role).network, spec=TASKS[task])
                for role, task in (("myocardium", "myocardium_unet"), ("scar", "scar_unet"))}
    inputs = calibration_inputs([PhantomSource(series)], networks)
    out = {}
    for name, (task, leg) in NETWORKS.items():
        out[name] = work / f"{task}-int8.onnx"
        quantize_int8(LEGS / leg / "model.onnx", out[name], inputs[task])
    return out


def candidate_dir(work: Path, label: str, networks: dict[str, tuple[int, str]],
                  int8: dict[str, Path]) -> Path:
    """A models folder whose cascade runs ``members`` copies of each fold-0 network."""
    folder = work / label.replace(" ", "_").replace(",", "")
    shutil.copytree(ROOT / "models", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["models"]:
        if entry["name"] not in networks:
            continue
        count, precision = networks[entry["name"]]
        task, leg = NETWORKS[entry["name"]]
        entry["input"]["preprocessing"] = TASKS[task].to_dict()
        source = LEGS / leg / "model.onnx"
        files = []
        for k in range(count):
            fp32, quantised = folder / f"{task}-m{k}.onnx", folder / f"{task}-m{k}-int8.onnx"
            shutil.copy2(source, fp32)
            shutil.copy2(int8[entry["name"]], quantised)
            files.append({"file": fp32.name, "sha256": sha256_of(fp32), "fold": k,
                          "int8": {"file": quantised.name, "sha256": sha256_of(quantised)}})
        entry["file"], entry["sha256"] = files[0]["file"], files[0]["sha256"]
        entry["int8"] = {"file": files[0]["int8"]["file"], "sha256": files[0]["int8"]["sha256"],
                         "default": precision == "int8"}
        if len(files) > 1:
            entry["members"] = files
        else:
            entry.pop("members", None)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def shared_outside_analyse_ms() -> float:
    """What a POST adds around ``analyse`` whatever the networks (decode, the encoder's
    inputs, the store and HTTP), from the last ``latency.py`` run's cascade row."""
    row = json.loads(LATENCY.read_text())["results"]["cascade-unet"]
    stages = row["stages_median_ms"]
    return stages["decode"] + stages["encode"] + row["write_store_http_ms"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        series = benchmark_series(work / "series")
        volume = build_volume([pydicom.dcmread(p) for p in (series / "dicom").glob("*.dcm")])
        int8 = int8_copies(series, work / "int8")
        pipelines = {"0.3.2 as shipped": load_registry(
            ROOT / "models", "cpu", precision="auto").pipelines["cascade-unet"]}
        for label, networks in CANDIDATES.items():
            folder = candidate_dir(work, label, networks, int8)
            pipelines[label] = load_registry(folder, "cpu", precision="auto") \
                .pipelines["cascade-unet"]
        warm_up(list(pipelines.values()))
        calibration = [host_calibration_ms()]
        times = {label: [] for label in pipelines}
        for _ in range(args.runs):  # interleaved: the host's drift falls on every candidate
            for label, pipeline in pipelines.items():
                t0 = time.perf_counter()
                analyse(volume, pipeline, 0.0)
                times[label].append((time.perf_counter() - t0) * 1000.0)
        calibration.append(host_calibration_ms())
    base = statistics.median(times["0.3.2 as shipped"])
    shared = shared_outside_analyse_ms()
    rows = []
    for label, values in times.items():
        loaded = pipelines[label]
        networks = CANDIDATES.get(label, {"myocardium-unet": (1, loaded.myocardium.precision),
                                          "scar-unet": (1, loaded.scar.precision)})
        p50 = statistics.median(values)
        rows.append({"candidate": label,
                     "myocardium": {"members": networks["myocardium-unet"][0],
                                    "precision": loaded.myocardium.precision},
                     "scar": {"members": networks["scar-unet"][0],
                              "precision": loaded.scar.precision},
                     "p50_ms": p50, "p95_ms": float(np.percentile(values, 95)),
                     "ratio_to_0_3_2": p50 / base,
                     "ratio_over_http_estimated": (p50 + shared) / (base + shared),
                     "runs": len(values)})
        print(f"{label:38s} p50 {p50:6.0f} ms  {p50 / base:4.2f}x 0.3.2, over HTTP about "
              f"{rows[-1]['ratio_over_http_estimated']:4.2f}x")
    result = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "runs": args.runs,
              "shared_outside_analyse_ms": shared,
              "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
              "host_calibration_ms": calibration, "rows": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    write_section(section(result), "ensemble-cost")
    return 0


def section(result: dict) -> str:
    lines = [f"## What a fold ensemble costs ({result['date']})", "",
             f"`python benchmarks/ensemble_cost.py --runs {result['runs']}`: the cascade's "
             f"`analyse` (in process, no decode, store or HTTP) on the 12 x 256x256 latency "
             f"series, each candidate's networks copies of fold 0's kept legs (speed does not "
             f"depend on the weights), interleaved run by run with release 0.3.2 as shipped; "
             f"{result['machine']}, host calibration "
             + " / ".join(f"{c:.0f}" for c in result["host_calibration_ms"])
             + " ms (before / after). The budget the release chooses within: at most 1.5x "
             "0.3.2's p50 over HTTP (issue 52, point 5). \"Over HTTP, about\" adds to both "
             f"sides what a POST spends around `analyse` whatever the networks "
             f"({result['shared_outside_analyse_ms']:.0f} ms: decode, the encoder's inputs, "
             "the store and HTTP, from `benchmarks/results/latency.json`).", "",
             "| candidate | myocardium U-Nets | scar U-Nets | p50 ms | p95 ms | x 0.3.2 "
             "| over HTTP, about |",
             "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        myo, scar = row["myocardium"], row["scar"]
        lines.append(f"| {row['candidate']} | {myo['members']} {myo['precision']} | "
                     f"{scar['members']} {scar['precision']} | {row['p50_ms']:.0f} | "
                     f"{row['p95_ms']:.0f} | {row['ratio_to_0_3_2']:.2f}x | "
                     f"{row['ratio_over_http_estimated']:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
