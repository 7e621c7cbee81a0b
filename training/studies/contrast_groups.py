"""Where the LV blood pool sits against the myocardium, per group of training series.

``python -m training.studies.contrast_groups --emidec ../shared/data/emidec``
``--phantoms runs/train/phantoms/train``

The measurement behind ``service.pipeline.contrast.BRIGHT_BLOOD_POSITION``: the blood
position (:func:`service.pipeline.contrast.blood_position`) on the expert or true
masks of EMIDEC ``train`` and ``validation`` (as acquired and darkened) and
of phantom training series, never the test sets. Writes
``models/evaluation/contrast_groups.json`` and its table into
``docs/training.md`` (between the ``contrast_groups`` markers).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from service.pipeline.contrast import BRIGHT_BLOOD_POSITION, blood_position
from training.data import emidec
from training.data.sources import PhantomSource
from training.generated import write_block

DOCS = Path(__file__).parents[2] / "docs" / "training.md"


def _groups(emidec_root: Path, phantom_dirs: list[Path]) -> dict[str, list[float]]:
    split = emidec.read_split(emidec_root)
    cases = split["train"] + split["validation"]
    groups: dict[str, list[float]] = {}
    for dark, name in ((False, "EMIDEC bright-blood"), (True, "EMIDEC darkened")):
        for case in cases:
            series = emidec.EmidecCase(emidec_root, case, dark).read()
            kind = "infarct" if series.true_scar.any() else "normal"
            value = blood_position(series.images, series.true_myocardium)
            if value is not None:
                groups.setdefault(f"{name}, {kind}", []).append(value)
    for folder in phantom_dirs:
        series = PhantomSource(folder).read()
        kind = "scar" if series.true_scar.any() else "scar-free"
        value = blood_position(series.images, series.true_myocardium)
        if value is not None:
            groups.setdefault(f"phantoms (dark-blood), {kind}", []).append(value)
    return groups


def summarise(groups: dict[str, list[float]]) -> list[dict]:
    rows = []
    for name, values in groups.items():
        v = np.asarray(values)
        bright = name.startswith("EMIDEC bright")
        read_bright = v >= BRIGHT_BLOOD_POSITION
        rows.append({"group": name, "n": int(v.size),
                     "min": float(v.min()), "median": float(np.median(v)),
                     "max": float(v.max()),
                     "read_right": int((read_bright == bright).sum())})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [f"| group | n | min | median | max | read right at {BRIGHT_BLOOD_POSITION:g} |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['group']} | {r['n']} | {r['min']:.2f} | {r['median']:.2f} | "
              f"{r['max']:.2f} | {r['read_right']} of {r['n']} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emidec", type=Path, required=True)
    parser.add_argument("--phantoms", type=Path, required=True,
                        help="a folder of phantom training series (the training command's "
                        "WORK/phantoms/train)")
    parser.add_argument("--out", type=Path,
                        default=Path("models") / "evaluation" / "contrast_groups.json")
    parser.add_argument("--docs", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    phantom_dirs = sorted(p for p in args.phantoms.glob("phantom_*") if p.is_dir())
    rows = summarise(_groups(args.emidec, phantom_dirs))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threshold": BRIGHT_BLOOD_POSITION, "rows": rows},
                                   indent=1) + "\n")
    write_block(args.docs, "contrast_groups", markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
