"""``python -m service.batch SOURCE OUT [--pipeline NAME] [--address ray://...]``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from service.batch.dicomweb import retrieve_studies
from service.batch.discover import SeriesFiles, discover, display_path
from service.batch.engine import WorkerConfig, run
from service.batch.outputs import (
    OutInUse,
    done,
    file_name,
    lock_out,
    models_key,
    out_space,
    write_failure,
    write_tables,
)
from service.config import Settings
from service.errors import InsufficientStorage

# Exit status of a run that OUT's full disk cut short (sysexits' EX_TEMPFAIL: run it again
# once space is freed; what was done is kept and skipped).
EXIT_OUT_FULL = 75


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service.batch",
                                     description="Re-analyse every series of an archive.")
    parser.add_argument("source", help="a folder tree of DICOM files (any layout), or a "
                        "DICOMweb base URL (with --study)")
    parser.add_argument("out", type=Path, help="where the reports, SEG, SR and tables go")
    parser.add_argument("--study", action="append", default=[],
                        help="a Study Instance UID to retrieve from a DICOMweb SOURCE "
                        "(repeat it, or give --studies FILE)")
    parser.add_argument("--studies", type=Path, default=None,
                        help="a file of Study Instance UIDs, one per line")
    parser.add_argument("--pipeline", default=None, help="default: the manifest's default")
    parser.add_argument("--address", default=None,
                        help="an existing Ray cluster (e.g. ray://head:10001); default: Ray "
                        "started here with this machine's cores")
    parser.add_argument("--workers", type=int, default=None,
                        help="actors (default: the cluster's CPUs / --cpus-per-worker, or its "
                        "GPUs / --gpus-per-worker)")
    parser.add_argument("--cpus-per-worker", type=float, default=0.9)
    parser.add_argument("--gpus-per-worker", type=float, default=0.0,
                        help="a GPU share per actor (onnxruntime's CUDA provider)")
    return parser.parse_args(argv)


def check_out(out: Path) -> None:
    """OUT must be a folder this process can write: refused here, before Ray starts."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"OUT {display_path(out)} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "series").mkdir(exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SystemExit(f"OUT {display_path(out)} cannot be written ({exc.strerror})") from None


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    check_out(args.out)
    try:
        lock = lock_out(args.out)
    except OutInUse as exc:
        raise SystemExit(str(exc)) from None
    settings = Settings()
    full = out_space(args.out, settings.min_free_bytes).problem()
    if full is not None:
        raise SystemExit(f"{full}: free space there before the run")
    from service.pipeline.registry import load_registry

    # Loaded once here for the models' key (and to fail early on a bad model store).
    registry = load_registry(settings.models_dir, "cpu", precision=settings.model_precision)
    pipeline = registry.pipelines[args.pipeline or registry.default_pipeline]
    key = models_key(pipeline)
    started = time.perf_counter()
    source = Path(args.source)
    if args.source.startswith(("http://", "https://")):
        studies = list(args.study)
        if args.studies:
            studies += [line.strip() for line in args.studies.read_text().splitlines()
                        if line.strip()]
        if not studies:
            raise SystemExit("a DICOMweb SOURCE needs --study UID or --studies FILE")
        source = args.out / "retrieved"
        new = retrieve_studies(args.source, studies, source, settings)
        print(f"{new} instances retrieved from {len(studies)} studies into {source}",
              flush=True)
    elif not source.is_dir():
        raise SystemExit(f"SOURCE {display_path(source)} is not a folder")
    # OUT inside SOURCE is never read as input (its SEG and SR are not new series).
    found = discover(source, exclude=[args.out])
    names = [s.series_uid for s in found.series]
    # A series' files may get rows of their own (a truncated second copy of an instance).
    names += [file_name(f) for s in found.series for f in s.files]
    for bad in found.unreadable:
        write_failure(args.out, key, {"series_uid": "", "study_uid": "", "patient_id": "",
                                      "modality": "", "files": [bad.path]},
                      bad.code, 422, bad.message, 1)
        names.append(file_name(bad.path))
    finished = done(args.out, key)
    # Done means done from the same instance set: a series whose files changed is new work.
    todo: list[SeriesFiles] = [s for s in found.series
                               if finished.get(s.series_uid) != s.input_digest]
    print(f"{len(found.series)} series found ({len(found.skipped)} entries skipped, "
          f"{len(found.unreadable)} files unreadable: skipped.parquet and failures.parquet "
          f"name them); {len(found.series) - len(todo)} already done, {len(todo)} to analyse",
          flush=True)
    config = WorkerConfig(models_dir=str(settings.models_dir),
                          provider=settings.execution_provider,
                          precision=settings.model_precision, pipeline=pipeline.name,
                          out=str(args.out.resolve()), key=key, threads=1,
                          max_series_pixels=settings.max_series_pixels,
                          duplicates=settings.duplicate_instances,
                          min_free_bytes=settings.min_free_bytes)
    with tqdm(total=len(todo), unit="series", file=sys.stderr) as bar:
        summary = run(todo, config, args.address, args.workers, args.cpus_per_worker,
                      args.gpus_per_worker, progress=lambda state: bar.update(1))
    try:
        results, failures = write_tables(args.out, key, names, found.skipped)
    except (OSError, InsufficientStorage) as exc:
        reason = exc.message if isinstance(exc, InsufficientStorage) else exc.strerror
        print(f"the tables could not be written in OUT ({reason}): free space there and run "
              "again; every series' results are kept and skipped", flush=True)
        return EXIT_OUT_FULL
    minutes = (time.perf_counter() - started) / 60.0
    print(f"done: {summary.done} analysed, {summary.refused} refused, {summary.failed} failed "
          f"this run, {summary.per_minute:.1f} series/min; {results} rows in "
          f"{args.out / 'results.parquet'}, {failures} in {args.out / 'failures.parquet'} "
          f"({minutes:.1f} min in all)", flush=True)
    lock.close()
    if summary.no_space:
        print(f"{summary.no_space} series were not analysed because OUT is full (rows "
              "'insufficient_storage' where they fitted): free space there and run the same "
              "command again; what is done is skipped", flush=True)
        return EXIT_OUT_FULL
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
