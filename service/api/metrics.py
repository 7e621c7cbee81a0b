"""Prometheus metrics (``GET /metrics``): requests, latencies, analyses in flight.

One registry per app (tests start several apps in one process). Requests are
labelled by route template (``/v1/analyses/{analysis_id}``), never by the
raw path, so ids and UIDs do not become label values.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import InputError

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("dblge_http_requests", "HTTP requests answered",
                                ("method", "route", "status"), registry=self.registry)
        self.latency = Histogram("dblge_http_request_duration_seconds",
                                 "Time from request to the end of the answer",
                                 ("method", "route"), buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.in_flight = Gauge("dblge_analyses_in_flight", "Analyses running now",
                               registry=self.registry)
        self.analyses = Counter("dblge_analyses", "Analyses finished, by pipeline and outcome",
                                ("pipeline", "outcome"), registry=self.registry)
        self.analysis_seconds = Histogram("dblge_analysis_duration_seconds",
                                          "Analysis time (decode to stored)", ("pipeline",),
                                          buckets=LATENCY_BUCKETS, registry=self.registry)
        self.stow_instances = Counter("dblge_stow_instances", "Instances received by STOW-RS",
                                      ("outcome",), registry=self.registry)


async def run_counted(metrics: Metrics, pipeline: str, work: Callable[..., Any], *args: Any
                      ) -> Any:
    """Run one analysis in a worker thread, counted and timed by outcome."""
    metrics.in_flight.inc()
    started = time.perf_counter()
    outcome = "error"
    try:
        result = await run_in_threadpool(work, *args)
        outcome = "ok"
        return result
    except InputError:
        outcome = "rejected"
        raise
    finally:
        metrics.in_flight.dec()
        metrics.analyses.labels(pipeline, outcome).inc()
        metrics.analysis_seconds.labels(pipeline).observe(time.perf_counter() - started)


class MetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI: streams pass through untouched)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
