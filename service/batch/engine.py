"""The series run on Ray Data: a callable class per actor, sessions opened once.

On this machine Ray is started in-process with the cores it has; with an
address the same code runs on that cluster. Each actor asks for
``cpus_per_worker`` CPUs (0.9 by default: on a 2-core machine two actors then
leave Ray Data's own tasks room, where 1.0 each would starve them) and runs
onnxruntime with that many threads, rounded up; with ``gpus_per_worker`` it takes
a GPU share and onnxruntime's CUDA provider. Ray restarts an actor whose process
dies and retries its batch; every series' exception is caught in the actor and
becomes a failure file, so one bad series never fails the run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from service.batch.discover import SeriesFiles
from service.batch.outputs import (
    MAX_ATTEMPTS,
    OUTPUT_SHARE,
    count_attempt,
    forget_attempt,
    out_space,
    write_failure,
    write_file_failures,
    write_result,
)
from service.errors import InsufficientStorage, ServiceError

log = logging.getLogger("service.batch")


@dataclass(frozen=True)
class WorkerConfig:
    models_dir: str
    provider: str
    precision: str
    pipeline: str | None
    out: str
    key: str
    threads: int
    max_series_pixels: int
    duplicates: str = "reject"  # DUPLICATE_INSTANCES
    min_free_bytes: int = 0  # MIN_FREE_BYTES, kept free in OUT


class SeriesWorker:
    """One Ray actor: the registry loaded once, then series after series."""

    def __init__(self, config: dict) -> None:
        from service.pipeline.registry import load_registry

        self.config = WorkerConfig(**config)
        registry = load_registry(Path(self.config.models_dir), self.config.provider,
                                 precision=self.config.precision,
                                 intra_op_threads=self.config.threads)
        self.pipeline = registry.pipelines[self.config.pipeline or registry.default_pipeline]

    def __call__(self, batch: dict) -> dict:
        tasks = [json.loads(row) for row in batch["task"]]
        return {"series_uid": [t["series_uid"] for t in tasks],
                "state": [self.analyse(t) for t in tasks]}

    def analyse(self, source: dict) -> str:
        from service.analysis import analyse_files
        from service.batch.discover import display_path
        from service.dicom.ingest import Blob
        from service.encoding import encode_stored

        out, key = Path(self.config.out), self.config.key
        attempts = 0  # until counted: a failure to count is a failure of this series too
        try:
            # A series that keeps killing its worker is a failure row first of all.
            attempts = count_attempt(out, source["series_uid"], key)
            if attempts > MAX_ATTEMPTS:
                write_failure(out, key, source, "worker_crashed", 500,
                              f"the series stopped its worker {attempts - 1} times; not "
                              "tried again (the worker's log has what it printed)",
                              attempts - 1)
                return "failed"
            # A full OUT: refused before the work, not counted as a try (_no_space), so the
            # next run analyses it. A file gone since discovery weighs nothing here; reading
            # it names it below.
            out_space(out, self.config.min_free_bytes).check(
                round(OUTPUT_SHARE * sum(_size(f) for f in source["files"])))
            # Named by their whole path: an error or a conflict names the files to look at.
            # In arrival order, for DUPLICATE_INSTANCES' keep-first and keep-last: a file's
            # modification time (when it was written into the archive), then its path.
            blobs = [Blob(display_path(f), Path(f)) for f in
                     sorted(source["files"], key=lambda f: (os.stat(f).st_mtime_ns, f))]
            analysed = analyse_files(blobs, self.pipeline, self.config.max_series_pixels,
                                     analysis_id=f"{source['series_uid']}.{key}",
                                     review_notes=tuple(source.get("review_notes", ())),
                                     duplicates=self.config.duplicates)
            write_file_failures(out, key, source, {str(c.blob.path): (c.code, c.message)
                                                   for c in analysed.bad_copies})
            write_result(out, key, analysed.report,
                         encode_stored(analysed.report, analysed.files), source)
        except InsufficientStorage as exc:
            return _no_space(out, key, source, exc, attempts)
        except ServiceError as exc:
            write_failure(out, key, source, exc.code, exc.status_code, exc.message, attempts)
            return "refused" if exc.status_code < 500 else "failed"
        except Exception as exc:  # noqa: BLE001 - a bug: recorded, the run goes on
            log.exception("series failed")
            write_failure(out, key, source, "internal_error", 500,
                          f"{type(exc).__name__} (a bug; the worker's log has the traceback)",
                          attempts)
            return "failed"
        return "done"


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _no_space(out: Path, key: str, source: dict, exc: InsufficientStorage,
              attempts: int) -> str:
    """OUT is full: a failure row saying so where one still fits (nothing of the series'
    results is left half-written); not counted as a try, so the next run analyses it."""
    log.warning("series not analysed: %s", exc.message)
    forget_attempt(out, source["series_uid"], key)
    try:
        write_failure(out, key, source, exc.code, exc.status_code, exc.message, attempts)
    except InsufficientStorage:
        pass  # not even a row fits: the run's summary counts it
    return "no_space"


def task_of(series: SeriesFiles) -> dict:
    """One series as the JSON a worker gets (paths that are not UTF-8 travel escaped as
    surrogates, which json keeps and ``open`` turns back into the same bytes)."""
    return asdict(series) | {"files": list(series.files), "instances": [],
                             "review_notes": list(series.review_notes),
                             "input_digest": series.input_digest}


@dataclass(frozen=True)
class RunSummary:
    done: int
    refused: int
    failed: int
    no_space: int  # not analysed: OUT was full (tried again by the next run)
    seconds: float

    @property
    def per_minute(self) -> float:
        series = self.done + self.refused + self.failed + self.no_space
        return 60.0 * series / max(self.seconds, 1e-9)


def run(tasks: list[SeriesFiles], config: WorkerConfig, address: str | None = None,
        workers: int | None = None, cpus_per_worker: float = 0.9,
        gpus_per_worker: float = 0.0, progress=None) -> RunSummary:
    """Every task through the actor pool; ``progress(state)`` after each series."""
    import ray

    started = time.perf_counter()
    counts = {"done": 0, "refused": 0, "failed": 0, "no_space": 0}
    if not tasks:
        return RunSummary(0, 0, 0, 0, 0.0)
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 object_store_memory=256 * 2**20)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        cpus = ray.cluster_resources().get("CPU", 1.0)
        if workers is None:
            by_gpu = (int(ray.cluster_resources().get("GPU", 0) / gpus_per_worker)
                      if gpus_per_worker else 0)
            workers = by_gpu or max(1, int((cpus - 0.1) // cpus_per_worker))
        config = WorkerConfig(**(asdict(config) | {
            "threads": max(1, math.ceil(cpus_per_worker)),
            "provider": "cuda" if gpus_per_worker else config.provider}))
        rows = [{"task": json.dumps(task_of(t))} for t in tasks]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
        results = dataset.map_batches(
            SeriesWorker, fn_constructor_kwargs={"config": asdict(config)}, batch_size=1,
            concurrency=min(workers, len(rows)), num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker or None)
        for row in results.iter_rows():
            counts[row["state"]] += 1
            if progress:
                progress(row["state"])
    finally:
        ray.shutdown()
    return RunSummary(**counts, seconds=time.perf_counter() - started)
