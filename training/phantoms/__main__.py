"""Command line: ``python -m training.phantoms --out DIR -n 200 --seed 0``."""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from tqdm import tqdm

from . import generate_one


def _generate_or_reuse(seed: int, index: int, out_dir: Path) -> dict:
    """Series already written (meta.json last) are kept, so an interrupted run resumes."""
    meta = out_dir / f"phantom_{seed:04d}_{index:05d}" / "meta.json"
    if meta.exists():
        return json.loads(meta.read_text())
    return generate_one(seed, index, out_dir)


def generate_many(out: Path, count: int, seed: int, start: int = 0,
                  workers: int | None = None) -> list[Path]:
    """Write series ``start .. start+count-1`` of data set ``seed``; returns their folders."""
    out.mkdir(parents=True, exist_ok=True)
    indices = range(start, start + count)
    work = partial(_generate_or_reuse, seed, out_dir=out)
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
    args = parser.parse_args(argv)
    dirs = generate_many(args.out, args.count, args.seed, args.start, args.workers)
    print(f"wrote {len(dirs)} series to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
