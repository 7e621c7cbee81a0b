"""The HTTP routes of the contract, grouped by router; each hands its request to a stage.

``health`` (/healthz, /readyz) is open; ``api`` (/v1), ``dicomweb``
(STOW-RS) and ``pages`` (viewer index, /metrics, /docs) need the API key
when one is set. Errors are raised as :mod:`service.errors` exceptions and
mapped to HTTP once, in :mod:`service.app`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Annotated

import numpy as np
import pydicom
import swagger_ui_bundle
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.auth import COOKIE, authorised, key_matches, session_token
from service.api.metrics import Metrics, run_counted
from service.config import Settings
from service.dicom.ingest import Spool, split_body, spool_capped, stow_parts
from service.errors import InputError, NotFound, Overloaded, ServiceError
from service.jobs import analyse_and_store, limits_of
from service.pacs.inbox import is_uid
from service.pacs.stow import receive, response
from service.pipeline.registry import Registry
from service.pipeline.report import (
    AnalysisSummary,
    PipelineInfo,
    Readiness,
    ReceivedSeriesState,
    Report,
)
from service.store.results import ResultStore
from service.viewer.overlay import auto_window, default_scale, heart_box, render_overlay, to_png
from service.viewer.pages import index_page, login_page, viewer_page

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


def require_api_key(request: Request) -> None:
    if not authorised(request, request.app.state.settings.api_key):
        raise StarletteHTTPException(401, "missing or wrong API key: send "
                                     "'Authorization: Bearer KEY', or sign in at /login",
                                     headers={"WWW-Authenticate": "Bearer"})


def _registry(request: Request) -> Registry:
    registry = request.app.state.registry
    if registry is None:
        raise Overloaded("models are still loading", retry_after_s=2)
    return registry


health = APIRouter(tags=["health"])


@health.get("/login", include_in_schema=False, response_class=HTMLResponse)
def login_form(next: str = "/") -> HTMLResponse:  # noqa: A002 - the form's field name
    return HTMLResponse(login_page(_local_path(next)))


@health.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    """Exchange the API key for a session cookie (browsers cannot send the header)."""
    settings: Settings = request.app.state.settings
    form = await request.form()
    key, target = str(form.get("key", "")), _local_path(str(form.get("next", "/")))
    if not key_matches(key, settings.api_key):
        return HTMLResponse(login_page(target, failed=True), status_code=401)
    response = Response(status_code=303, headers={"Location": target})
    lifetime = settings.session_hours * 3600.0
    response.set_cookie(COOKIE, session_token(settings.api_key, lifetime), max_age=int(lifetime),
                        httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


@health.post("/logout", include_in_schema=False)
def logout() -> Response:
    response = Response(status_code=303, headers={"Location": "/login"})
    response.delete_cookie(COOKIE, path="/")
    return response


def _local_path(target: str) -> str:
    """Only a path on this service: never redirect a signed-in browser elsewhere."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


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
    await slots.acquire()
    handed_over = False
    spool = Spool(settings.spool_dir)
    try:
        body = await _read_body(request, settings, spool)
        blobs = await run_in_threadpool(split_body, request.headers.get("content-type"), body,
                                        limits_of(settings), spool)
        analysis_id = uuid.uuid4().hex
        work = asyncio.ensure_future(run_counted(
            request.app.state.metrics, name, analyse_and_store, blobs,
            registry.pipelines[name], settings, request.app.state.store, (), analysis_id))
        # The files go when the work ends, which may be after this answer (202 below).
        work.add_done_callback(lambda _, files=spool: files.close())
        spool = None
        done, _ = await asyncio.wait({work}, timeout=settings.analysis_timeout_s)
        if not done:
            # The analysis cannot be stopped mid-thread; it is kept, not both failed and
            # stored: the client is told where it will appear, and the slot stays taken
            # until it ends.
            handed_over = True
            _follow_up(request.app.state, analysis_id, work, slots)
            return JSONResponse(
                {"id": analysis_id, "status": "running",
                 "message": f"the analysis is taking longer than {settings.analysis_timeout_s:g}"
                            f" s; it goes on and will be at /v1/analyses/{analysis_id}"},
                status_code=202, headers={"Location": f"/v1/analyses/{analysis_id}",
                                          "Retry-After": "10"})
        report = work.result()
    finally:
        if not handed_over:
            slots.release()
        if spool is not None:
            spool.close()
    return JSONResponse(report, status_code=201,
                        headers={"Location": f"/v1/analyses/{report['id']}"})


def _follow_up(state, analysis_id: str, work: asyncio.Future, slots: asyncio.Semaphore) -> None:
    """Track an analysis the client stopped waiting for: running, then stored or failed."""
    state.running.add(analysis_id)

    def ended(future: asyncio.Future) -> None:
        state.running.discard(analysis_id)
        slots.release()
        exc = future.exception()
        if exc is not None:
            error = exc if isinstance(exc, ServiceError) else ServiceError(
                "an internal error stopped this analysis")
            state.failed[analysis_id] = (error.status_code, error.body())
            log.info("analysis %s failed after its client stopped waiting: %s", analysis_id,
                     error.code)

    work.add_done_callback(ended)


@api.get("/analyses", tags=["analyses"], response_model=list[AnalysisSummary])
def list_analyses(
    request: Request,
    series_instance_uid: Annotated[str | None, Query(description="only this series")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[dict]:
    """Stored analyses, newest first."""
    return request.app.state.store.recent(limit, series_instance_uid)


@api.get("/analyses/{analysis_id}", tags=["analyses"], response_model=Report)
def get_analysis(analysis_id: str, request: Request) -> dict | JSONResponse:
    """The stored report (202 while an analysis answered 202 is still running)."""
    state = request.app.state
    if analysis_id in state.running:
        return JSONResponse({"id": analysis_id, "status": "running"}, status_code=202,
                            headers={"Retry-After": "10"})
    if analysis_id in state.failed:
        status, body = state.failed[analysis_id]
        return JSONResponse(body, status_code=status)
    return state.store.report(analysis_id)


@api.delete("/analyses/{analysis_id}", tags=["analyses"])
def delete_analysis(analysis_id: str, request: Request) -> dict:
    """Remove the analysis (report, SEG, SR, queued push) and the received instances of its
    series; patient data is not kept longer than it is wanted."""
    report = request.app.state.store.delete(analysis_id)
    series_uid = report["series_instance_uid"]
    removed = is_uid(series_uid) and request.app.state.inbox.delete(series_uid)
    log.info("analysis %s deleted (received instances removed: %s)", analysis_id, removed)
    return {"deleted": analysis_id, "series_instance_uid": series_uid,
            "received_instances_deleted": bool(removed)}


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


@api.post("/analyses/{analysis_id}/store-back", tags=["analyses"], status_code=202,
          response_model=Report)
def retry_store_back(analysis_id: str, request: Request) -> JSONResponse:
    """Push this analysis' SEG and SR again now (it is retried with back-off anyway)."""
    store: ResultStore = request.app.state.store
    report = store.report(analysis_id)
    if not store.retry_push_now(analysis_id):
        raise InputError("nothing to push: no DICOMweb destination was configured for this "
                         "analysis, or its push is already done", code="nothing_to_push",
                         status_code=409)
    return JSONResponse(report, status_code=202)


@api.get("/series/{series_instance_uid}", tags=["dicomweb"], response_model=ReceivedSeriesState)
def received_series(series_instance_uid: str, request: Request) -> dict:
    """A series received by STOW-RS: waiting, analysing, done (with its analyses) or failed."""
    found = request.app.state.inbox.get(series_instance_uid) \
        if is_uid(series_instance_uid) else None
    if found is None:
        raise NotFound(f"no series {series_instance_uid!r} was received by STOW-RS")
    return found.to_dict()


# The largest overlay drawn (pixels a side): 2048 x 2048 RGB is 12 MB in memory.
MAX_OVERLAY_SIDE = 2048


def _arrays(store: ResultStore, analysis_id: str) -> dict[str, np.ndarray]:
    with np.load(store.path(analysis_id, "arrays")) as data:
        return {key: data[key] for key in ("images", "myocardium", "scar")}


def _shown_region(arrays: dict[str, np.ndarray], spacing: tuple[float, float], zoom: bool
                  ) -> tuple[tuple[int, int, int, int], float, float]:
    """(row0, col0, row1, col1) shown, and the default (window, level) taken from it:
    zoomed, bright chest-wall fat is left out of the grey scale."""
    images = arrays["images"]
    box = heart_box(arrays["myocardium"], spacing) if zoom else None
    y0, x0, y1, x1 = box or (0, 0, *images.shape[1:])
    width, level = auto_window(images[:, y0:y1, x0:x1])
    return (y0, x0, y1, x1), width, level


@api.get("/analyses/{analysis_id}/overlay/{k}.png", tags=["viewer"],
         responses={200: {"content": {"image/png": {}}}}, response_class=Response)
def get_overlay(
    analysis_id: str, k: int, request: Request,
    myocardium: Annotated[bool, Query(description="draw the myocardium outline")] = True,
    scar: Annotated[bool, Query(description="draw the scar fill")] = True,
    window: Annotated[float | None, Query(gt=0, description="window width; default from "
                                          "the series' 1st-99.5th percentile")] = None,
    level: Annotated[float | None, Query(description="window centre")] = None,
    scale: Annotated[int | None, Query(ge=1, le=8, description="integer upscale")] = None,
    zoom: Annotated[bool, Query(description="crop to the heart (the series' myocardium "
                                "+ 25 mm), the same box on every slice; zoom=0: the whole "
                                "field of view")] = True,
) -> Response:
    """Slice k (0 = most basal) with the myocardium outlined (sky blue) and scar filled
    (vermillion), at the original resolution times an integer factor. The header
    ``X-Overlay-Box`` gives the source pixels shown: ``row0,col0,row1,col1``."""
    store: ResultStore = request.app.state.store
    arrays = _arrays(store, analysis_id)
    images = arrays["images"]
    if not 0 <= k < len(images):
        raise NotFound(f"slice {k} does not exist; this series has slices 0 to "
                       f"{len(images) - 1}")
    spacing = tuple(store.report(analysis_id)["pixel_spacing_mm"])
    (y0, x0, y1, x1), auto_width, auto_level = _shown_region(arrays, spacing, zoom)
    crop = np.s_[y0:y1, x0:x1]
    factor = scale or default_scale((y1 - y0, x1 - x0))
    if max(y1 - y0, x1 - x0) * factor > MAX_OVERLAY_SIDE:
        raise InputError(f"scale {factor} would draw a picture of "
                         f"{max(y1 - y0, x1 - x0) * factor} pixels a side; at most "
                         f"{MAX_OVERLAY_SIDE}: use a smaller scale or zoom=1",
                         code="invalid_request", status_code=422)
    rgb = render_overlay(images[k][crop], arrays["myocardium"][k][crop],
                         arrays["scar"][k][crop], window or auto_width,
                         auto_level if level is None else level, factor, myocardium, scar)
    return Response(to_png(rgb), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=3600",
                             "X-Overlay-Box": f"{y0},{x0},{y1},{x1}"})


@api.get("/analyses/{analysis_id}/viewer", tags=["viewer"], response_class=HTMLResponse)
def get_viewer(analysis_id: str, request: Request) -> HTMLResponse:
    """A self-contained page to read the result: slices, masks, totals, bull's-eye."""
    store: ResultStore = request.app.state.store
    report = store.report(analysis_id)
    arrays = _arrays(store, analysis_id)
    images = arrays["images"]
    # The same region and grey scale as the viewer's first (zoomed) overlay.
    _, width, level = _shown_region(arrays, tuple(report["pixel_spacing_mm"]), zoom=True)
    # Whose scan this is, for the reader to confirm: from the stored SEG, which repeats the
    # source's patient and study attributes (the page is behind the API key when one is set).
    seg = pydicom.dcmread(store.path(analysis_id, "seg"), stop_before_pixels=True)
    identity = {"patient_name": str(seg.get("PatientName", "") or ""),
                "patient_id": str(seg.get("PatientID", "") or ""),
                "study_date": str(seg.get("StudyDate", "") or ""),
                "series_description": report.get("series_description") or ""}
    return HTMLResponse(viewer_page(report, width, level,
                                    (float(images.min()), float(images.max())), identity))


pages = APIRouter(dependencies=[Depends(require_api_key)], tags=["viewer"])


@pages.get("/metrics", tags=["health"], response_class=Response,
           responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    """Prometheus text format: requests by route and status, latencies, analyses in flight."""
    return Response(generate_latest(request.app.state.metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)


@pages.get("/openapi.json", include_in_schema=False)
def openapi_schema(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


# Swagger UI's files come from the swagger-ui-bundle package, not a CDN: a hospital network
# has none. Only these names are served.
SWAGGER_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
                  "favicon-32x32.png": "image/png"}


@pages.get("/docs", include_in_schema=False)
def swagger_ui() -> HTMLResponse:
    """FastAPI's interactive docs, behind the API key like every other endpoint."""
    return get_swagger_ui_html(openapi_url="/openapi.json", title="LGE scar service",
                               swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                               swagger_css_url="/docs/assets/swagger-ui.css",
                               swagger_favicon_url="/docs/assets/favicon-32x32.png")


@pages.get("/docs/assets/{name}", include_in_schema=False)
def swagger_asset(name: str) -> Response:
    if name not in SWAGGER_ASSETS:
        raise NotFound(f"no docs asset {name!r}")
    return Response((Path(swagger_ui_bundle.swagger_ui_path) / name).read_bytes(),
                    media_type=SWAGGER_ASSETS[name],
                    headers={"Cache-Control": "public, max-age=86400"})


@pages.get("/", response_class=HTMLResponse)
def home(request: Request) -> HTMLResponse:
    """Recent analyses with links to their viewers, and an upload form."""
    registry = _registry(request)
    return HTMLResponse(index_page(request.app.state.store.recent(100),
                                   sorted(registry.pipelines), registry.default_pipeline))


dicomweb = APIRouter(prefix="/dicomweb", tags=["dicomweb"],
                     dependencies=[Depends(require_api_key)])
STOW_RESPONSES = {200: {"content": {"application/dicom+json": {}},
                        "description": "every instance stored"},
                  202: {"content": {"application/dicom+json": {}},
                        "description": "some instances refused (FailedSOPSequence)"},
                  409: {"content": {"application/dicom+json": {}},
                        "description": "no instance stored (FailedSOPSequence)"}}


async def _read_body(request: Request, settings: Settings, spool: Spool) -> Path:
    """The capped body in a file, or 408 when the client stops sending (a slow client holds
    no slot forever)."""
    try:
        return await asyncio.wait_for(
            spool_capped(request.stream(), settings.max_request_bytes,
                         request.headers.get("content-length"), spool),
            timeout=settings.request_read_timeout_s)
    except TimeoutError:
        raise InputError(f"the request body did not arrive within "
                         f"{settings.request_read_timeout_s} s", code="request_timeout",
                         status_code=408) from None


async def _stow(request: Request, study_uid: str | None) -> JSONResponse:
    settings: Settings = request.app.state.settings
    with Spool(settings.spool_dir) as spool:
        body = await _read_body(request, settings, spool)
        # Parsing is synchronous and takes time on a large body: never on the event loop.
        blobs = await run_in_threadpool(stow_parts, request.headers.get("content-type"), body,
                                        limits_of(settings), spool)
        outcome = await run_in_threadpool(receive, blobs, study_uid, request.app.state.inbox)
    metrics: Metrics = request.app.state.metrics
    metrics.stow_instances.labels("stored").inc(len(outcome.stored))
    metrics.stow_instances.labels("refused").inc(len(outcome.refused))
    series = sorted({kept.series_instance_uid for kept in outcome.stored})
    log.info("STOW-RS: %d instance(s) of %d series stored, %d refused", len(outcome.stored),
             len(series), len(outcome.refused))
    # Free-text reasons for people; the FailureReason codes are for machines.
    messages = sorted({r.message for r in outcome.refused})[:5]
    headers = {"Warning": ", ".join(f'299 dblge-scar "{m}"'.replace("\n", " ")
                                    for m in messages)} if messages else {}
    return JSONResponse(response(outcome), status_code=outcome.status_code,
                        media_type="application/dicom+json", headers=headers)


@dicomweb.post("/studies", responses=STOW_RESPONSES, openapi_extra=UPLOAD_BODY)
async def store_instances(request: Request) -> JSONResponse:
    """STOW-RS: keep every MR instance, analyse each series once it has gone quiet.

    Instances are grouped by SeriesInstanceUID. A series is analysed with the
    default pipeline when no instance of it has arrived for STOW_QUIET_PERIOD_S
    seconds; ``GET /v1/series/{uid}`` then gives its analysis id.
    """
    return await _stow(request, None)


@dicomweb.post("/studies/{study_instance_uid}", responses=STOW_RESPONSES,
               openapi_extra=UPLOAD_BODY)
async def store_study_instances(study_instance_uid: str, request: Request) -> JSONResponse:
    """STOW-RS to one study: instances of other studies are refused (0xA900)."""
    return await _stow(request, study_instance_uid)


