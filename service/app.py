"""The ASGI app (``service.app:app``): routes and the one error handler.

Routes stay thin: they parse the request and hand over to the pipeline
stages. The analysis endpoints of the contract arrive with the service-core
issue; this foundation serves health and readiness.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .errors import Overloaded, ServiceError

log = logging.getLogger("service")

app = FastAPI(
    title="DB-LGE scar service",
    version=__version__,
    summary="Myocardium and scar segmentation of dark-blood LGE short-axis MRI. "
    "Research use only: models are trained on synthetic phantoms, not validated clinically.",
)


@app.exception_handler(ServiceError)
async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
    if exc.status_code >= 500 and not isinstance(exc, Overloaded):
        log.exception("internal error", exc_info=exc)
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Overloaded) else None
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse({"error": {"code": code, "message": str(exc.detail)}},
                        status_code=exc.status_code)


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return JSONResponse({"error": {"code": "invalid_request", "message": message}},
                        status_code=422)


@app.get("/healthz", tags=["health"])
def healthz() -> dict[str, str]:
    """200 while the process is up."""
    return {"status": "ok"}


@app.get("/readyz", tags=["health"])
def readyz() -> JSONResponse:
    """200 once every model is loaded; no model is loaded until the service-core issue."""
    return JSONResponse({"status": "not_ready", "models": []}, status_code=503)
