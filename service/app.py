"""The ASGI app (``service.app:app``): routes, start-up, and the one error handler.

Routes stay thin: they read the request and hand it to the stages
(ingest -> volume -> analysis -> store). Analyses run in worker threads,
at most ``MAX_CONCURRENT_ANALYSES`` at once; beyond that the answer is 503
with Retry-After rather than an unbounded queue.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .analysis import analyse, stored_files
from .config import Settings, get_settings
from .errors import InputError, Overloaded, ServiceError
from .ingest import Limits, read_capped, read_datasets, split_body
from .models import Registry, load_registry
from .report import PipelineInfo, Readiness, Report
from .store import ResultStore
from .volume import build_volume

log = logging.getLogger("service")

PIPELINE_DESCRIPTIONS = {
    "cascade-unet": "myocardium U-Net on the whole slice, crop to the heart's bounding box, "
                    "scar U-Net (seed 000)",
    "enet": "myocardium U-Net, Hough-circle crop, ENet on the crop x myocardium mask "
            "(seed 001, Protocol 2)",
    "enet-raw": "myocardium U-Net for the myocardium, ENet on the raw Hough-circle crop "
                "(seed 001, Protocol 1)",
}
UPLOAD_BODY = {
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {"files": {
            "type": "array", "items": {"type": "string", "format": "binary"}}}}},
        "application/zip": {"schema": {"type": "string", "format": "binary"}},
        "multipart/related": {"schema": {"type": "string", "format": "binary"}},
    }}}


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings: Settings = get_settings()
    app.state.settings = settings
    app.state.registry = None
    app.state.store = ResultStore(settings.data_dir)
    app.state.slots = asyncio.Semaphore(settings.max_concurrent_analyses)
    started = time.perf_counter()
    # Refusing to start beats serving unknown weights: a bad manifest raises here.
    app.state.registry = await run_in_threadpool(load_registry, settings.models_dir,
                                                 settings.execution_provider)
    log.info("models loaded in %.1f s: %s", time.perf_counter() - started,
             ", ".join(f"{m.name} {m.version} on {m.execution_provider}"
                       for m in app.state.registry.models.values()))
    try:
        yield
    finally:
        app.state.store.close()


async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
    if exc.status_code >= 500 and not isinstance(exc, Overloaded):
        log.exception("internal error", exc_info=exc)
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Overloaded) else None
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code, "http_error")
    return JSONResponse({"error": {"code": code, "message": str(exc.detail)}},
                        status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return JSONResponse({"error": {"code": "invalid_request", "message": message}},
                        status_code=422)


def require_api_key(request: Request) -> None:
    key = request.app.state.settings.api_key
    if not key:
        return
    given = request.headers.get("authorization", "")
    if not (given.startswith("Bearer ")
            and hmac.compare_digest(given[7:].encode(), key.encode())):
        raise StarletteHTTPException(401, "missing or wrong API key: send "
                                     "'Authorization: Bearer KEY'",
                                     headers={"WWW-Authenticate": "Bearer"})


def _registry(request: Request) -> Registry:
    registry = request.app.state.registry
    if registry is None:
        raise Overloaded("models are still loading", retry_after_s=2)
    return registry


health = APIRouter(tags=["health"])


@health.get("/healthz")
def healthz() -> dict[str, str]:
    """200 while the process is up."""
    return {"status": "ok"}


@health.get("/readyz", response_model=Readiness)
def readyz(request: Request) -> JSONResponse:
    """200 once every model is loaded, with the models and where they run; 503 before."""
    registry = request.app.state.registry
    if registry is None:
        return JSONResponse({"status": "not_ready", "models": []}, status_code=503)
    return JSONResponse({"status": "ready", "models": [
        {"name": m.name, "version": m.version, "sha256": m.sha256,
         "execution_provider": m.execution_provider} for m in registry.models.values()]})


api = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])


def _model_info(m) -> dict:
    return {"name": m.name, "version": m.version, "sha256": m.sha256,
            "execution_provider": m.execution_provider}


@api.get("/models", tags=["models"], response_model=list[PipelineInfo])
def list_models(request: Request) -> list[dict]:
    """The pipelines on offer and the models behind each."""
    registry = _registry(request)
    return [{"name": p.name, "default": p.name == registry.default_pipeline,
             "myocardium_model": _model_info(p.myocardium), "scar_model": _model_info(p.scar),
             "description": PIPELINE_DESCRIPTIONS.get(p.name, "")}
            for p in registry.pipelines.values()]


def _run_analysis(content_type: str | None, body: bytes, pipeline, settings: Settings,
                  store: ResultStore) -> dict:
    started = time.perf_counter()
    limits = Limits(settings.max_request_bytes, settings.max_files, settings.max_unzipped_bytes)
    datasets = read_datasets(split_body(content_type, body, limits))
    volume = build_volume(datasets)
    decode_ms = (time.perf_counter() - started) * 1000.0
    result = analyse(volume, pipeline, decode_ms)
    report = result.report.model_dump(mode="json")
    store.save(report, stored_files(result, volume))
    log.info("analysis %s stored: series %s, %d slices, pipeline %s, scar %.1f %%, %.0f ms",
             report["id"], report["series_instance_uid"], len(report["slices"]),
             report["pipeline"], report["scar_percent"], report["timings_ms"]["total"])
    return report


@api.post("/analyses", tags=["analyses"], status_code=201, response_model=Report,
          openapi_extra=UPLOAD_BODY)
async def create_analysis(
    request: Request,
    pipeline: Annotated[str | None, Query(description="cascade-unet (default), enet or "
                                          "enet-raw")] = None,
) -> JSONResponse:
    """Analyse one series; the report is stored before this answers 201."""
    registry = _registry(request)
    name = pipeline or registry.default_pipeline
    if name not in registry.pipelines:
        raise InputError(f"unknown pipeline {name!r}; choose one of "
                         f"{sorted(registry.pipelines)}", code="unknown_pipeline")
    settings: Settings = request.app.state.settings
    slots: asyncio.Semaphore = request.app.state.slots
    if slots.locked():
        raise Overloaded(f"{settings.max_concurrent_analyses} analyses are already running; "
                         "try again shortly")
    async with slots:
        body = await read_capped(request.stream(), settings.max_request_bytes,
                                 request.headers.get("content-length"))
        try:
            report = await asyncio.wait_for(
                run_in_threadpool(_run_analysis, request.headers.get("content-type"), body,
                                  registry.pipelines[name], settings, request.app.state.store),
                timeout=settings.analysis_timeout_s)
        except TimeoutError:
            raise Overloaded(f"the analysis took longer than {settings.analysis_timeout_s} s",
                             retry_after_s=30) from None
    return JSONResponse(report, status_code=201,
                        headers={"Location": f"/v1/analyses/{report['id']}"})


@api.get("/analyses/{analysis_id}", tags=["analyses"], response_model=Report)
def get_analysis(analysis_id: str, request: Request) -> dict:
    """The stored report."""
    return request.app.state.store.report(analysis_id)


@api.get("/analyses/{analysis_id}/seg", tags=["analyses"],
         responses={200: {"content": {"application/dicom": {}}}})
def get_seg(analysis_id: str, request: Request) -> FileResponse:
    """The DICOM Segmentation (Myocardium, Scar)."""
    path = request.app.state.store.path(analysis_id, "seg")
    return FileResponse(path, media_type="application/dicom",
                        filename=f"{analysis_id}_seg.dcm")


@api.get("/analyses/{analysis_id}/sr", tags=["analyses"],
         responses={200: {"content": {"application/dicom": {}}}})
def get_sr(analysis_id: str, request: Request) -> FileResponse:
    """The DICOM Structured Report of the measurements (TID 1500)."""
    path = request.app.state.store.path(analysis_id, "sr")
    return FileResponse(path, media_type="application/dicom", filename=f"{analysis_id}_sr.dcm")


def create_app() -> FastAPI:
    """A new app; settings are read when it starts (tests start several side by side)."""
    application = FastAPI(
        title="DB-LGE scar service",
        version=__version__,
        summary="Myocardium and scar segmentation of dark-blood LGE short-axis MRI. Research "
        "use only: models are trained on synthetic phantoms, not validated clinically.",
        lifespan=lifespan,
    )
    application.add_exception_handler(ServiceError, _service_error)
    application.add_exception_handler(StarletteHTTPException, _http_error)
    application.add_exception_handler(RequestValidationError, _validation_error)
    application.include_router(health)
    application.include_router(api)
    return application


app = create_app()
