"""The service's errors as HTTP answers: the one place where exceptions become responses.

Every answer has the contract's body ``{"error": {"code", "message"}}``;
anything unexpected is a 500 with an id to quote, its traceback in the log.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import InternalFailure, Overloaded, ServiceError, Unauthorized
from service.viewer.pages import login_page

log = logging.getLogger("service")


def _internal(exc: BaseException) -> JSONResponse:
    """A bug: the traceback goes to the log under an id the client is given to quote."""
    error_id = uuid.uuid4().hex[:12]
    log.error("internal error %s", error_id, exc_info=exc)
    return JSONResponse({"error": {"code": "internal", "id": error_id,
                                   "message": "an internal error stopped this request; quote "
                                              f"error id {error_id} when reporting it"}},
                        status_code=500)


async def _service_error(request: Request, exc: ServiceError) -> Response:
    if isinstance(exc, InternalFailure):  # logged already, under the id it carries
        return JSONResponse(exc.body(), status_code=500)
    if exc.status_code >= 500 and not isinstance(exc, Overloaded):
        return _internal(exc)
    headers = None
    if isinstance(exc, Overloaded):
        headers = {"Retry-After": str(exc.retry_after_s)}
    elif isinstance(exc, Unauthorized):
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            # A browser asking for a page: the sign-in form, which brings it back here.
            return HTMLResponse(login_page(request.url.path), status_code=401)
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    return _internal(exc)


async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
    """What the framework itself raises: no route (404), a method it has not (405)."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse({"error": {"code": code, "message": str(exc.detail)}},
                        status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return JSONResponse({"error": {"code": "invalid_request", "message": message}},
                        status_code=422)


def install_error_handlers(application: FastAPI) -> None:
    application.add_exception_handler(ServiceError, _service_error)
    application.add_exception_handler(StarletteHTTPException, _http_error)
    application.add_exception_handler(RequestValidationError, _validation_error)
    # Last: anything else is a bug, still answered in the contract's JSON.
    application.add_exception_handler(Exception, _unexpected)
