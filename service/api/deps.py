"""What every route needs: the API key check, the loaded models, a capped body on disk."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import Request

from service.api.auth import authorised
from service.config import Settings
from service.dicom.ingest import Spool, spool_capped
from service.errors import InputError, Overloaded, Unauthorized
from service.pipeline.registry import Registry
from service.store.results import ResultStore

UPLOAD_BODY = {
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {"files": {
            "type": "array", "items": {"type": "string", "format": "binary"}}}}},
        "application/zip": {"schema": {"type": "string", "format": "binary"}},
        "multipart/related": {"schema": {"type": "string", "format": "binary"}},
    }}}


def require_api_key(request: Request) -> None:
    if not authorised(request, request.app.state.settings.api_key):
        raise Unauthorized("missing or wrong API key: send 'Authorization: Bearer KEY', or "
                           "sign in at /login")


def registry_of(request: Request) -> Registry:
    registry = request.app.state.registry
    if registry is None:
        raise Overloaded("models are still loading", retry_after_s=2)
    return registry


def declared_length(request: Request) -> int:
    """The body's declared size; 0 without one, or when it is not a number (refused with
    400 where the body is read)."""
    try:
        return max(0, int(request.headers.get("content-length", "0")))
    except ValueError:
        return 0


def room_for_upload(store: ResultStore, settings: Settings, upload_bytes: int) -> None:
    """507 insufficient_storage unless the store can take a series of this upload size
    (SERIES_STORAGE_FACTOR times it, and MIN_FREE_BYTES kept free). A declared size over
    MAX_REQUEST_BYTES is left to the body's reading, which refuses it with 413: the request
    is wrong whatever the free space."""
    if upload_bytes > settings.max_request_bytes:
        return
    store.space.check(round(settings.series_storage_factor * upload_bytes))


async def read_body(request: Request, settings: Settings, spool: Spool) -> Path:
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
