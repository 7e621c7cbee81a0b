"""``/v1``: the analyses (create, read, delete, SEG, SR, store-back, overlay, viewer) and
the pipelines that make them.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import uuid
from typing import Annotated

import numpy as np
import pydicom
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.background import BackgroundTask

from service.analysis import analyse_and_store, identity_of, limits_of
from service.api.deps import (
    UPLOAD_BODY,
    declared_length,
    read_body,
    registry_of,
    require_api_key,
    room_for_upload,
)
from service.api.metrics import run_counted
from service.api.schemas import AnalysisSummary, PipelineInfo
from service.api.shutdown import finished_in_time, taking_work
from service.config import Settings
from service.dicom.ingest import Spool, split_body
from service.dicom.uids import is_uid
from service.encoding import disagreement
from service.errors import (
    InputError,
    InsufficientStorage,
    InternalFailure,
    NotEncodedYet,
    NotFound,
    Overloaded,
    ServiceError,
)
from service.pipeline.report import Report
from service.store import arrays as stored_arrays
from service.store.results import ResultStore
from service.viewer.overlay import auto_window, default_scale, heart_box, render_overlay, to_png
from service.viewer.pages import viewer_page

log = logging.getLogger("service")

PIPELINE_DESCRIPTIONS = {
    "cascade-unet": "myocardium U-Net on the whole slice, crop to the heart's bounding box, "
                    "scar U-Net (seed 000)",
    "enet": "myocardium U-Net, Hough-circle crop, ENet on the crop x myocardium mask "
            "(seed 001, Protocol 2)",
    "enet-raw": "myocardium U-Net for the myocardium, ENet on the raw Hough-circle crop "
                "(seed 001, Protocol 1)",
}
router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])


def _model_info(m) -> dict:
    return {"name": m.name, "version": m.version, "sha256": m.sha256,
            "execution_provider": m.execution_provider}


@router.get("/models", tags=["models"], response_model=list[PipelineInfo])
def list_models(request: Request) -> list[dict]:
    """The pipelines on offer and the models behind each."""
    registry = registry_of(request)
    return [{"name": p.name, "default": p.name == registry.default_pipeline,
             "myocardium_model": _model_info(p.myocardium), "scar_model": _model_info(p.scar),
             "ring_model": None if p.ring is None else _model_info(p.ring),
             "description": PIPELINE_DESCRIPTIONS.get(p.name, "") + (
                 "" if p.ring is None else f"; the myocardium redrawn by {p.ring.name} "
                 "inside the heart box places and masks the crop")}
            for p in registry.pipelines.values()]


@router.post("/analyses", tags=["analyses"], status_code=201, response_model=Report,
          openapi_extra=UPLOAD_BODY, dependencies=[Depends(taking_work)])
async def create_analysis(
    request: Request,
    pipeline: Annotated[str | None, Query(description="cascade-unet (default), enet or "
                                          "enet-raw")] = None,
) -> JSONResponse:
    """Analyse one series; the report is stored before this answers 201."""
    registry = registry_of(request)
    name = pipeline or registry.default_pipeline
    if name not in registry.pipelines:
        raise InputError(f"unknown pipeline {name!r}; choose one of "
                         f"{sorted(registry.pipelines)}", code="unknown_pipeline")
    settings: Settings = request.app.state.settings
    store: ResultStore = request.app.state.store
    # Refused before anything is read or written: a full store (507), a full encoder queue.
    room_for_upload(store, settings, declared_length(request))
    request.app.state.encoder.check_room()
    slots: asyncio.Semaphore = request.app.state.slots
    if slots.locked():
        raise Overloaded(f"{settings.max_concurrent_analyses} analyses are already running; "
                         "try again shortly")
    await slots.acquire()
    handed_over = answered = False
    spool, work = None, None
    try:
        with store.space.guard():  # the spool is on DATA_DIR too: a full disk is 507
            spool = Spool(settings.spool_dir)
            body = await read_body(request, settings, spool)
            room_for_upload(store, settings, body.stat().st_size)
            blobs = await run_in_threadpool(split_body, request.headers.get("content-type"),
                                            body, limits_of(settings), spool)
        analysis_id = uuid.uuid4().hex
        work = asyncio.ensure_future(run_counted(
            request.app.state.metrics, name, analyse_and_store, blobs,
            registry.pipelines[name], settings, request.app.state.store, (), analysis_id,
            None, request.app.state.encoder, spool.size()))
        if not await finished_in_time(request.app, work, settings.analysis_timeout_s):
            # The analysis cannot be stopped mid-thread; it is kept, not both failed and
            # stored: the client is told where it will appear, and the slot stays taken
            # until it ends.
            handed_over = True
            work.add_done_callback(lambda _: spool.close())
            _follow_up(request.app.state, analysis_id, work, slots)
            return JSONResponse(
                {"id": analysis_id, "status": "running",
                 "message": f"the analysis is taking longer than {settings.analysis_timeout_s:g}"
                            f" s; it goes on and will be at /v1/analyses/{analysis_id}"},
                status_code=202, headers={"Location": f"/v1/analyses/{analysis_id}",
                                          "Retry-After": "10"})
        report = work.result()
        answered = True
    finally:
        if not handed_over:
            slots.release()
        # The files go when the work ends: after the 201 is sent (removing them is no part
        # of the client's wait), else now, or when the work ends (a stop's grace over, the
        # client gone).
        if spool is not None and not handed_over and not answered:
            if work is None or work.done():
                spool.close()
            else:
                work.add_done_callback(lambda _: spool.close())
    return JSONResponse(report, status_code=201,
                        headers={"Location": f"/v1/analyses/{report['id']}"},
                        background=BackgroundTask(spool.close))


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


@router.get("/analyses", tags=["analyses"], response_model=list[AnalysisSummary])
def list_analyses(
    request: Request,
    series_instance_uid: Annotated[str | None, Query(description="only this series")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[dict]:
    """Stored analyses, newest first."""
    return request.app.state.store.recent(limit, series_instance_uid)


@router.get("/analyses/{analysis_id}", tags=["analyses"], response_model=Report)
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


@router.delete("/analyses/{analysis_id}", tags=["analyses"])
def delete_analysis(analysis_id: str, request: Request) -> dict:
    """Remove the analysis (report, SEG, SR, queued push) and the received instances of its
    series; patient data is not kept longer than it is wanted."""
    report = request.app.state.store.delete(analysis_id)
    series_uid = report["series_instance_uid"]
    removed = is_uid(series_uid) and request.app.state.inbox.delete(series_uid)
    log.info("analysis %s deleted (received instances removed: %s)", analysis_id, removed)
    return {"deleted": analysis_id, "series_instance_uid": series_uid,
            "received_instances_deleted": bool(removed)}


async def _encoded(request: Request, analysis_id: str, kind: str) -> FileResponse:
    """A SEG or SR, once encoded (after the 201): waited for ENCODING_WAIT_S at most, then
    503 with Retry-After; the same bytes on every call (the file is written once)."""
    store: ResultStore = request.app.state.store
    settings: Settings = request.app.state.settings
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.encoding_wait_s
    while True:
        # Listening before looking: an encoding that settles in between still wakes it.
        async with request.app.state.encoder.listening() as settled:
            if (state := store.encoding_state(analysis_id)) != "pending":
                break
            if loop.time() >= deadline:
                raise NotEncodedYet(f"the {kind.upper()} of analysis {analysis_id} is still "
                                    "being encoded (the analysis is stored); ask again shortly",
                                    retry_after_s=2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), min(ENCODING_POLL_S,
                                                           max(deadline - loop.time(), 0.0)))
    if state != "done":
        error = state["error"]
        if state["status"] >= 500:  # a bug, retried and given up on: its logged error id
            raise InternalFailure(f"no {kind.upper()} could be made of analysis "
                                  f"{analysis_id}: {error['message']}", error_id=error["id"])
        raise InputError(f"no {kind.upper()} could be made of this analysis: "
                         f"{error['message']}", code=error["code"], status_code=422)
    return FileResponse(store.path(analysis_id, kind), media_type="application/dicom",
                        filename=f"{analysis_id}_{kind}.dcm")


# How often a GET of a SEG or SR looks whether its encoding is done, unless the encoder
# wakes it first (it does when any encoding settles: a poll of 20 ms cost a whole analysis
# 10 ms on average, issue 54).
ENCODING_POLL_S = 0.5


@router.get("/analyses/{analysis_id}/seg", tags=["analyses"],
         responses={200: {"content": {"application/dicom": {}}}})
async def get_seg(analysis_id: str, request: Request) -> FileResponse:
    """The DICOM Segmentation (Myocardium, Scar, MVO)."""
    return await _encoded(request, analysis_id, "seg")


@router.get("/analyses/{analysis_id}/sr", tags=["analyses"],
         responses={200: {"content": {"application/dicom": {}}}})
async def get_sr(analysis_id: str, request: Request) -> FileResponse:
    """The DICOM Structured Report of the measurements (TID 1500)."""
    return await _encoded(request, analysis_id, "sr")


@router.post("/analyses/{analysis_id}/store-back", tags=["analyses"], status_code=202,
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


# The largest overlay drawn (pixels a side): 2048 x 2048 RGB is 12 MB in memory.
MAX_OVERLAY_SIDE = 2048


def _arrays(store: ResultStore, analysis_id: str) -> dict[str, np.ndarray]:
    arrays = stored_arrays.load(store.path(analysis_id, "arrays"),
                                ("images", "myocardium", "scar", "mvo"))
    if "mvo" not in arrays:  # results stored before MVO was measured have none
        arrays["mvo"] = np.zeros_like(arrays["scar"])
    return arrays


def _shown_region(arrays: dict[str, np.ndarray], spacing: tuple[float, float], zoom: bool
                  ) -> tuple[tuple[int, int, int, int], float, float]:
    """(row0, col0, row1, col1) shown, and the default (window, level) taken from it:
    zoomed, bright chest-wall fat is left out of the grey scale."""
    images = arrays["images"]
    box = heart_box(arrays["myocardium"], spacing) if zoom else None
    y0, x0, y1, x1 = box or (0, 0, *images.shape[1:])
    width, level = auto_window(images[:, y0:y1, x0:x1])
    return (y0, x0, y1, x1), width, level


def _spread(request: Request, analysis_id: str) -> np.ndarray:
    """The layer of where the scar network disagrees with itself: made the first time a
    reader asks (eight runs of the scar network), then kept."""
    store: ResultStore = request.app.state.store
    if not store.has(analysis_id, "spread"):
        report = store.report(analysis_id)
        pipeline = registry_of(request).pipelines.get(report["pipeline"])
        arrays = {"arrays": store.path(analysis_id, "arrays").read_bytes()}
        data = None if pipeline is None else disagreement(report, arrays, pipeline)
        if data is None:
            raise NotFound("no layer of where the networks disagree can be made for this "
                           "analysis (stored before 0.4.0, or its pipeline is no longer served)")
        try:
            store.save_spread(analysis_id, data)
        except InsufficientStorage:  # a full store: drawn this once, kept another time
            with np.load(io.BytesIO(data)) as made:
                return made["spread"]
    with np.load(store.path(analysis_id, "spread")) as data:
        return data["spread"]


@router.get("/analyses/{analysis_id}/overlay/{k}.png", tags=["viewer"],
         responses={200: {"content": {"image/png": {}}}}, response_class=Response)
def get_overlay(
    analysis_id: str, k: int, request: Request,
    myocardium: Annotated[bool, Query(description="draw the myocardium outline")] = True,
    scar: Annotated[bool, Query(description="draw the scar fill (and the MVO inside it)")
                    ] = True,
    window: Annotated[float | None, Query(gt=0, description="window width; default from "
                                          "the series' 1st-99.5th percentile")] = None,
    level: Annotated[float | None, Query(description="window centre")] = None,
    scale: Annotated[int | None, Query(ge=1, le=8, description="integer upscale")] = None,
    zoom: Annotated[bool, Query(description="crop to the heart (the series' myocardium "
                                "+ 25 mm), the same box on every slice; zoom=0: the whole "
                                "field of view")] = True,
    disagreement: Annotated[bool, Query(description="blend in where the scar network "
                                        "disagrees with itself over flips and turns of its "
                                        "input (made when first asked for, then kept)")] = False,
) -> Response:
    """Slice k (0 = most basal) with the myocardium outlined (sky blue), scar filled
    (vermillion) and microvascular obstruction filled yellow inside it, at the original
    resolution times an integer factor. The header
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
    spread = _spread(request, analysis_id)[k][crop] if disagreement else None
    rgb = render_overlay(images[k][crop], arrays["myocardium"][k][crop],
                         arrays["scar"][k][crop], window or auto_width,
                         auto_level if level is None else level, factor, myocardium, scar,
                         mvo=arrays["mvo"][k][crop], spread=spread)
    return Response(to_png(rgb), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=3600",
                             "X-Overlay-Box": f"{y0},{x0},{y1},{x1}"})


@router.get("/analyses/{analysis_id}/viewer", tags=["viewer"], response_class=HTMLResponse)
def get_viewer(analysis_id: str, request: Request) -> HTMLResponse:
    """A self-contained page to read the result: slices, masks, totals, bull's-eye."""
    store: ResultStore = request.app.state.store
    report = store.report(analysis_id)
    arrays = _arrays(store, analysis_id)
    images = arrays["images"]
    # The same region and grey scale as the viewer's first (zoomed) overlay.
    _, width, level = _shown_region(arrays, tuple(report["pixel_spacing_mm"]), zoom=True)
    # Whose scan this is, for the reader to confirm (the page is behind the API key when
    # one is set): from the index; for analyses stored before it kept them, from the SEG,
    # which repeats the source's patient and study attributes.
    identity = store.identity(analysis_id)
    if not identity:  # stored before the index kept it: the SEG has it (not the series')
        seg = pydicom.dcmread(store.path(analysis_id, "seg"), stop_before_pixels=True)
        identity = identity_of(seg) | {
            "series_description": report.get("series_description") or ""}
    return HTMLResponse(viewer_page(report, width, level,
                                    (float(images.min()), float(images.max())), identity))
