"""Command line: ``python -m training.data.phantoms --out DIR -n 200 --seed 0``."""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from tqdm import tqdm

from training.data.phantoms import OBSTRUCTION_PROBABILITY, generate_one
from training.data.phantoms.spec import recorded_obstruction_probability


def _generate_or_reuse(seed: int, index: int, out_dir: Path,
                       obstruction_probability: float = OBSTRUCTION_PROBABILITY) -> dict:
    """Series already written (meta.json last) with the same draw are kept, so an
    interrupted run resumes; one drawn with another obstruction probability is redrawn."""
    meta_path = out_dir / f"phantom_{seed:04d}_{index:05d}" / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if recorded_obstruction_probability(meta["spec"]) == obstruction_probability:
            return meta
    return generate_one(seed, index, out_dir, obstruction_probability)


def generate_many(out: Path, count: int, seed: int, start: int = 0,
                  workers: int | None = None,
                  obstruction_probability: float = OBSTRUCTION_PROBABILITY) -> list[Path]:
    """Write series ``start .. start+count-1`` of data set ``seed``; returns their folders."""
    out.mkdir(parents=True, exist_ok=True)
    indices = range(start, start + count)
    work = partial(_generate_or_reuse, seed, out_dir=out,
                   obstruction_probability=obstruction_probability)
    rows = []
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for meta in tqdm(pool.map(work, indices), total=count, unit="series",
                         desc=f"phantoms seed {seed}"):
            rows.append({k: meta[k] for k in ("series_id", "n_slices", "scar_percent",
                                                "territories", "pixel_spacing_mm")})
    (out / "index.json").write_text(json.dumps({"seed": seed, "series": rows}, indent=1))
    return [out / f"phantom_{seed:04d}_{i:05d}" for i in indices]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write synthetic DB-LGE short-axis series "
                                     "(DICOM MR) with myocardium and scar ground truth.")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("-n", "--count", type=int, default=20, help="number of series")
    parser.add_argument("--seed", type=int, default=0, help="data-set seed (same seed, same files)")
    parser.add_argument("--start", type=int, default=0, help="index of the first series")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--obstruction-probability", type=float,
                        default=OBSTRUCTION_PROBABILITY,
                        help="share of deep scars with microvascular obstruction (training "
                        "mixes only; the default is the data sets' natural mix)")
    args = parser.parse_args(argv)
    dirs = generate_many(args.out, args.count, args.seed, args.start, args.workers,
                         args.obstruction_probability)
    print(f"wrote {len(dirs)} series to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
