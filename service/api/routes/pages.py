"""Pages for people: the index, ``/docs`` (served here, no CDN) and ``/metrics``."""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import registry_of, require_api_key
from service.errors import NotFound
from service.viewer.pages import index_page

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["viewer"])


@router.get("/metrics", tags=["health"], response_class=Response,
           responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    """Prometheus text format: requests by route and status, latencies, analyses in flight."""
    return Response(generate_latest(request.app.state.metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", include_in_schema=False)
def openapi_schema(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


# Swagger UI's files come from the swagger-ui-bundle package, not a CDN: a hospital network
# has none. Only these names are served.
SWAGGER_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
                  "favicon-32x32.png": "image/png"}


@router.get("/docs", include_in_schema=False)
def swagger_ui() -> HTMLResponse:
    """FastAPI's interactive docs, behind the API key like every other endpoint."""
    return get_swagger_ui_html(openapi_url="/openapi.json", title="LGE scar service",
                               swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                               swagger_css_url="/docs/assets/swagger-ui.css",
                               swagger_favicon_url="/docs/assets/favicon-32x32.png")


@router.get("/docs/assets/{name}", include_in_schema=False)
def swagger_asset(name: str) -> Response:
    if name not in SWAGGER_ASSETS:
        raise NotFound(f"no docs asset {name!r}")
    return Response((Path(swagger_ui_bundle.swagger_ui_path) / name).read_bytes(),
                    media_type=SWAGGER_ASSETS[name],
                    headers={"Cache-Control": "public, max-age=86400"})


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> HTMLResponse:
    """Recent analyses with links to their viewers, and an upload form."""
    registry = registry_of(request)
    return HTMLResponse(index_page(request.app.state.store.recent(100),
                                   sorted(registry.pipelines), registry.default_pipeline))
