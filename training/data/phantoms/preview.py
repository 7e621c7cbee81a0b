"""``python -m training.data.phantoms.preview SERIES_DIR OUT.png``: a montage to look at.

Top row: the slices base to apex (window from the 1st-99.5th percentile);
bottom row: the same with the truth drawn (myocardium green, scar red).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from training.data.phantoms import load_series, load_truth


def montage(series_dir: Path, half_side_px: int = 48, max_slices: int = 8) -> np.ndarray:
    truth = load_truth(series_dir)
    datasets, images = load_series(series_dir)
    union = np.any([t["myocardium"] for t in truth.values()], axis=0)
    ys, xs = np.nonzero(union) if union.any() else ([union.shape[0] // 2], [union.shape[1] // 2])
    cy, cx = int(np.mean(ys)), int(np.mean(xs))
    top, bottom = [], []
    for ds, image in list(zip(datasets, images, strict=True))[:max_slices]:
        lo, hi = np.percentile(image, [1, 99.5])
        grey = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
        rgb = np.repeat(grey[..., None], 3, axis=-1)
        overlay = rgb.copy()
        t = truth[ds.SOPInstanceUID]
        overlay[t["myocardium"] > 0] = 0.5 * overlay[t["myocardium"] > 0] + [0, 0.5, 0]
        overlay[t["scar"] > 0] = 0.4 * overlay[t["scar"] > 0] + [0.6, 0, 0]
        pad = half_side_px
        window = (slice(cy, cy + 2 * pad), slice(cx, cx + 2 * pad))
        top.append(np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)))[window])
        bottom.append(np.pad(overlay, ((pad, pad), (pad, pad), (0, 0)))[window])
    grid = np.concatenate([np.concatenate(top, 1), np.concatenate(bottom, 1)], 0)
    return (grid * 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    image = Image.fromarray(montage(Path(args[0])))
    image.resize((image.width * 2, image.height * 2), Image.NEAREST).save(args[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
