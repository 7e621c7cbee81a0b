"""The ASGI app (``service.api.app:app``): start-up and the background loops.

The routes are in :mod:`service.api.routes` and stay thin: they read the
request and hand it to the stages (ingest -> volume -> analysis -> store,
in :mod:`service.analysis`). Analyses run in worker threads, at most
``MAX_CONCURRENT_ANALYSES`` at once; an upload beyond that is answered 503
with Retry-After rather than queued without bound. Two background loops
run beside the routes: one analyses series received by STOW-RS once they
have gone quiet (they wait for a free slot instead of being refused), one
pushes SEG and SR to the DICOMweb destination with back-off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from service import __version__, logs
from service.analysis import warm_up
from service.api import shutdown
from service.api.errors import install_error_handlers
from service.api.metrics import Metrics, MetricsMiddleware, run_counted
from service.api.routes import ROUTERS
from service.config import Settings, get_settings
from service.dicom.ingest import clear_spools
from service.encoding import Encoder
from service.pacs.inbox import Inbox
from service.pacs.received import analyse_received
from service.pacs.store_back import push_due
from service.pipeline.registry import Registry, load_registry
from service.store.lock import hold_data_dir, release_data_dir
from service.store.results import ResultStore
from service.store.space import Space

log = logging.getLogger("service")


async def _every(app: FastAPI, name: str, work) -> None:
    """Run ``work(app)`` (a coroutine function) every poll interval until the app stops."""
    settings: Settings = app.state.settings
    while not app.state.stopping.is_set():
        try:
            await work(app)
        except Exception:  # noqa: BLE001 - a background loop must outlive a bug; it is logged
            log.exception("background %s failed; retrying", name)
        try:
            await asyncio.wait_for(app.state.stopping.wait(), settings.background_poll_s)
        except TimeoutError:
            pass


async def _analyse_quiet_series(app: FastAPI) -> None:
    registry: Registry | None = app.state.registry
    if registry is None:
        return
    settings: Settings = app.state.settings
    pipeline = registry.pipelines[registry.default_pipeline]
    if app.state.store.space.problem() is not None or not app.state.encoder.has_room():
        return  # received series wait, as received, for space and for the encoder
    for series_uid in app.state.inbox.due(time.time(), settings.stow_quiet_period_s):
        if app.state.stopping.is_set() or shutdown.draining(app):
            return
        async with app.state.slots:
            if shutdown.draining(app):  # a stop began while this waited: parked, as received
                return
            await run_counted(app.state.metrics, pipeline.name, analyse_received, series_uid,
                              app.state.inbox, pipeline, settings, app.state.store,
                              app.state.encoder)


# The background loops' least time to see the stop (they wait on it between rounds).
LOOPS_END_S = 1.0
# How often the retention rule is applied (when RETENTION_DAYS is set).
RETENTION_CHECK_S = 60.0


def purge_expired(store: ResultStore, inbox: Inbox, retention_days: float, now: float) -> int:
    """Delete the analyses and received series older than the retention period."""
    cutoff = now - retention_days * 86400.0
    cutoff_iso = datetime.fromtimestamp(cutoff, UTC).isoformat()
    removed = 0
    for analysis_id in store.older_than(cutoff_iso):
        store.delete(analysis_id)
        removed += 1
    for series_uid in inbox.older_than(cutoff):
        removed += inbox.delete(series_uid)
    if removed:
        log.info("retention: %d analyses and received series older than %g days deleted",
                 removed, retention_days)
    return removed


async def _apply_retention(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    now = time.time()
    if settings.retention_days is None or now - app.state.last_purge < RETENTION_CHECK_S:
        return
    app.state.last_purge = now
    await run_in_threadpool(purge_expired, app.state.store, app.state.inbox,
                            settings.retention_days, now)


async def _push_results(app: FastAPI) -> None:
    await run_in_threadpool(push_due, app.state.store, app.state.settings)


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings: Settings = get_settings()
    # Before anything touches the folder: a second process on it refuses to start.
    hold_data_dir(settings.data_dir)
    try:
        async with _serving(app, settings):
            yield
    finally:
        release_data_dir(settings.data_dir)


@asynccontextmanager
async def _serving(app: FastAPI, settings: Settings):
    app.state.settings = settings
    app.state.registry = None
    shutdown.init(app)
    # One free-space rule for DATA_DIR's filesystem: the results, the inbox, the spool.
    space = Space(settings.data_dir, "the result store (DATA_DIR)", settings.min_free_bytes)
    app.state.store = ResultStore(settings.data_dir, settings.dicomweb_store_url, space)
    # SEG and SR after the answer; what a crash left unencoded is encoded first.
    app.state.encoder = Encoder(app.state.store, settings.encoding_queue_max,
                                settings.encoding_max_attempts, settings.encoding_first_retry_s,
                                settings.background_poll_s)
    app.state.inbox = Inbox(settings.data_dir, settings.max_files, space)
    app.state.metrics.watch(app.state.store, app.state.encoder)
    clear_spools(settings.spool_dir)
    app.state.slots = asyncio.Semaphore(settings.max_concurrent_analyses)
    app.state.stopping = asyncio.Event()
    app.state.last_purge = 0.0
    # Analyses answered 202 (past ANALYSIS_TIMEOUT_S) still running, and those that then
    # failed (status, error body), so GET /v1/analyses/{id} can say which.
    app.state.running, app.state.failed = set(), {}
    started = time.perf_counter()
    # Refusing to start beats serving unknown weights: a bad manifest raises here.
    registry = await run_in_threadpool(load_registry, settings.models_dir,
                                       settings.execution_provider, settings.onnx_memory_arena,
                                       settings.model_precision)
    # /readyz says ready only after the pipelines to warm have run once: the first patient's
    # analysis must not pay for lazy initialisation (BENCHMARKS.md, "First request").
    await run_in_threadpool(registry.load_all)
    names = (list(registry.pipelines) if settings.warm_pipelines == "all"
             else [registry.default_pipeline])
    pipelines = [registry.pipelines[n] for n in names]
    log.info("models checked and loaded in %.1f s: %s", time.perf_counter() - started,
             ", ".join(f"{m.name} {m.version} ({m.precision}) on {m.execution_provider}"
                       for m in registry.loaded))
    warmed = await run_in_threadpool(warm_up, pipelines)
    log.info("pipelines %s warmed up in %.1f s", ", ".join(names), warmed)
    unencoded = app.state.encoder.start()
    if unencoded:
        log.info("%d stored analyses without SEG and SR (an interrupted run): encoding them",
                 unencoded)
    app.state.registry = registry
    loops = [asyncio.create_task(_every(app, "STOW-RS analyses", _analyse_quiet_series)),
             asyncio.create_task(_every(app, "store-back", _push_results)),
             asyncio.create_task(_every(app, "retention", _apply_retention))]
    try:
        yield
    finally:
        # Let a running job finish (it writes to the store) before closing the databases;
        # after a drain (SIGTERM), within what is left of its grace.
        app.state.stopping.set()
        await asyncio.wait(loops, timeout=max(
            shutdown.remaining_s(app, settings.analysis_timeout_s), LOOPS_END_S))
        # After a drain the queue is empty unless the grace ended: then only the encoding
        # running is finished and the rest are left for the next start.
        await run_in_threadpool(app.state.encoder.stop,
                                max(shutdown.remaining_s(app, 30.0), shutdown.LAST_ENCODING_S),
                                shutdown.draining(app))
        app.state.inbox.close()
        app.state.store.close()


def create_app() -> FastAPI:
    """A new app; settings are read when it starts (tests start several side by side)."""
    application = FastAPI(
        title="DB-LGE scar service",
        version=__version__,
        summary="Myocardium and scar segmentation of dark-blood and bright-blood LGE short-axis "
        "MRI. Research use only: models are trained on synthetic phantoms and 70 real scans "
        "from one centre, not validated clinically.",
        lifespan=lifespan,
        # Served by `pages` instead, so that API_KEY guards them too.
        docs_url=None, redoc_url=None, openapi_url=None,
    )
    logs.install()  # whoever serves the app, no element value reaches its log
    application.state.metrics = Metrics()
    application.add_middleware(MetricsMiddleware, metrics=application.state.metrics)
    install_error_handlers(application)
    for router in ROUTERS:
        application.include_router(router)
    return application


app = create_app()
