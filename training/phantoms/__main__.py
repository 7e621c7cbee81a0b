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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write synthetic DB-LGE short-axis series "
                                     "(DICOM MR) with myocardium and scar ground truth.")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("-n", "--count", type=int, default=20, help="number of series")
    parser.add_argument("--seed", type=int, default=0, help="data-set seed (same seed, same files)")
    parser.add_argument("--start", type=int, default=0, help="index of the first series")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    indices = range(args.start, args.start + args.count)
    work = partial(generate_one, args.seed, out_dir=args.out)
    rows = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for meta in tqdm(pool.map(work, indices), total=args.count, unit="series",
                         desc="phantoms"):
            rows.append({k: meta[k] for k in ("series_id", "n_slices", "scar_percent",
                                                "territories", "pixel_spacing_mm")})
    (args.out / "index.json").write_text(json.dumps({"seed": args.seed, "series": rows}, indent=1))
    print(f"wrote {len(rows)} series to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
