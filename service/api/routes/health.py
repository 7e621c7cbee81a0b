"""Open to all: liveness, readiness, and the browser sign-in (``/login``, ``/logout``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from service.api.auth import COOKIE, key_matches, session_token
from service.api.schemas import Readiness
from service.api.shutdown import draining
from service.config import Settings
from service.viewer.pages import login_page

router = APIRouter(tags=["health"])


@router.get("/login", include_in_schema=False, response_class=HTMLResponse)
def login_form(next: str = "/") -> HTMLResponse:  # noqa: A002 - the form's field name
    return HTMLResponse(login_page(_local_path(next)))


@router.post("/login", include_in_schema=False)
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


@router.post("/logout", include_in_schema=False)
def logout() -> Response:
    response = Response(status_code=303, headers={"Location": "/login"})
    response.delete_cookie(COOKIE, path="/")
    return response


def _local_path(target: str) -> str:
    """Only a path on this service: never redirect a signed-in browser elsewhere."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """200 while the process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness)
def readyz(request: Request) -> JSONResponse:
    """200 once every model is loaded, with the models and where they run; 503 before, and
    once stopping (SIGTERM: a load balancer sends no more work)."""
    if draining(request.app):
        return JSONResponse({"status": "shutting_down", "models": []}, status_code=503)
    registry = request.app.state.registry
    if registry is None:
        return JSONResponse({"status": "not_ready", "models": []}, status_code=503)
    models = [{"name": m.name, "version": m.version, "sha256": m.sha256,
               "execution_provider": m.execution_provider, "precision": m.precision}
              for m in registry.loaded]
    # A store that cannot take a series: not ready until space is freed (checked each time).
    full = request.app.state.store.space.problem()
    if full is not None:
        return JSONResponse({"status": "not_ready", "reason": full, "models": models},
                            status_code=503)
    return JSONResponse({"status": "ready", "models": models})
