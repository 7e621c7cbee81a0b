"""STOW-RS in (``/dicomweb/studies``), and what became of each received series
(``/v1/series/{uid}``).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from service.analysis import limits_of
from service.api.deps import (
    UPLOAD_BODY,
    declared_length,
    read_body,
    require_api_key,
    room_for_upload,
)
from service.api.metrics import Metrics
from service.api.schemas import ReceivedSeriesState
from service.api.shutdown import taking_work
from service.config import Settings
from service.dicom.ingest import Spool, stow_parts
from service.dicom.uids import is_uid
from service.errors import NotFound
from service.pacs.stow import receive, response
from service.store.space import RETRY_AFTER_S

log = logging.getLogger("service")

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"],
                   dependencies=[Depends(require_api_key)])
STOW_RESPONSES = {200: {"content": {"application/dicom+json": {}},
                        "description": "every instance stored"},
                  202: {"content": {"application/dicom+json": {}},
                        "description": "some instances refused (FailedSOPSequence)"},
                  409: {"content": {"application/dicom+json": {}},
                        "description": "no instance stored (FailedSOPSequence)"}}


async def _stow(request: Request, study_uid: str | None) -> JSONResponse:
    settings: Settings = request.app.state.settings
    store = request.app.state.store
    # A full store: 507 before anything is read or kept (a PACS retries the whole request).
    room_for_upload(store, settings, declared_length(request))
    with store.space.guard(), Spool(settings.spool_dir) as spool:
        body = await read_body(request, settings, spool)
        room_for_upload(store, settings, body.stat().st_size)
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
    if outcome.out_of_space:  # the disk filled up mid-request: the refused ones, again later
        headers["Retry-After"] = str(RETRY_AFTER_S)
    return JSONResponse(response(outcome), status_code=outcome.status_code,
                        media_type="application/dicom+json", headers=headers)


@router.post("/studies", responses=STOW_RESPONSES, openapi_extra=UPLOAD_BODY,
             dependencies=[Depends(taking_work)])
async def store_instances(request: Request) -> JSONResponse:
    """STOW-RS: keep every MR instance, analyse each series once it has gone quiet.

    Instances are grouped by SeriesInstanceUID. A series is analysed with the
    default pipeline when no instance of it has arrived for STOW_QUIET_PERIOD_S
    seconds; ``GET /v1/series/{uid}`` then gives its analysis id.
    """
    return await _stow(request, None)


@router.post("/studies/{study_instance_uid}", responses=STOW_RESPONSES,
               openapi_extra=UPLOAD_BODY, dependencies=[Depends(taking_work)])
async def store_study_instances(study_instance_uid: str, request: Request) -> JSONResponse:
    """STOW-RS to one study: instances of other studies are refused (0xA900)."""
    return await _stow(request, study_instance_uid)




received = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])


@received.get("/series/{series_instance_uid}", tags=["dicomweb"],
              response_model=ReceivedSeriesState)
def received_series(series_instance_uid: str, request: Request) -> dict:
    """A series received by STOW-RS: waiting, analysing, done (with its analyses) or failed."""
    found = request.app.state.inbox.get(series_instance_uid) \
        if is_uid(series_instance_uid) else None
    if found is None:
        raise NotFound(f"no series {series_instance_uid!r} was received by STOW-RS")
    return found.to_dict()
