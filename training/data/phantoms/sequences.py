"""The same phantom hearts rendered in other MR contrasts: what the LGE gate must refuse.

A cine (bSSFP) or T2-weighted series of a heart has the anatomy of an LGE
series, and its headers can be rewritten to an LGE protocol; only its
contrast tells it apart. These renderings keep a spec's anatomy, geometry
and acquisition and replace the tissue signals by those of the other
sequence (relative values from the sequences' physics: bSSFP signal grows
with T2/T1, so blood and fat are bright and myocardium, muscle and liver
grey; dark-blood T2-weighted TSE suppresses flowing blood and, with STIR,
fat, and shows oedema brighter than myocardium; T2-prepared bright-blood
SSFP keeps the blood bright). Healthy myocardium is never nulled, which is
what an LGE image shows first. Used to build and test the image-reading
gate (:mod:`service.pipeline.acceptance`), never to train.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from training.data.phantoms.dicom import series_id, write_series
from training.data.phantoms.render import render
from training.data.phantoms.spec import Intensities, PhantomSpec, sample_spec

OTHER_SEQUENCES = ("cine", "t2-dark-blood", "t2-bright-blood")


def _draw(rng: np.random.Generator, sequence: str) -> Intensities:
    u = rng.uniform
    if sequence == "cine":
        myocardium = u(0.25, 0.4)
        return Intensities(myocardium=myocardium, blood=u(0.85, 1.0), scar=myocardium,
                           mvo=myocardium, fat=u(0.7, 0.95), muscle=u(0.2, 0.35),
                           lung=u(0.02, 0.06), liver=u(0.3, 0.45), vessel=u(0.8, 1.0),
                           bone=u(0.3, 0.45))
    if sequence == "t2-dark-blood":
        myocardium = u(0.3, 0.45)
        fat = u(0.05, 0.15) if rng.random() < 0.5 else u(0.7, 0.9)  # STIR or not
        return Intensities(myocardium=myocardium, blood=u(0.02, 0.08),
                           scar=myocardium * u(1.3, 1.8), mvo=myocardium * u(0.6, 0.9),
                           fat=fat, muscle=u(0.25, 0.4), lung=u(0.01, 0.03),
                           liver=u(0.25, 0.4), vessel=u(0.02, 0.06), bone=u(0.1, 0.2))
    if sequence == "t2-bright-blood":
        myocardium = u(0.3, 0.4)
        return Intensities(myocardium=myocardium, blood=u(0.6, 0.85),
                           scar=myocardium * u(1.3, 1.6), mvo=myocardium, fat=u(0.2, 0.5),
                           muscle=u(0.25, 0.35), lung=u(0.02, 0.05), liver=u(0.25, 0.35),
                           vessel=u(0.6, 0.85), bone=u(0.15, 0.3))
    raise ValueError(f"{sequence} is not one of {OTHER_SEQUENCES}")


def in_other_sequence(spec: PhantomSpec, sequence: str) -> PhantomSpec:
    """``spec`` with the tissue signals of ``sequence``, drawn from the spec's own seed."""
    rng = np.random.default_rng([spec.seed, spec.index, zlib.crc32(sequence.encode())])
    return dataclasses.replace(spec, intensities=_draw(rng, sequence))


def generate_in_sequence(out: Path, count: int, seed: int, sequence: str,
                         workers: int | None = None) -> list[Path]:
    """Series ``0 .. count-1`` of data set ``seed`` rendered in ``sequence``, under OUT/sequence
    (written once; their headers stay the LGE protocol's, as if rewritten)."""
    folder = Path(out) / sequence
    folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(partial(_write_one, seed=seed, sequence=sequence, folder=folder),
                             range(count)))


def _write_one(index: int, seed: int, sequence: str, folder: Path) -> Path:
    spec = in_other_sequence(sample_spec(seed, index), sequence)
    done = folder / series_id(spec)
    if (done / "meta.json").exists():
        return done
    return write_series(spec, render(spec), folder)
