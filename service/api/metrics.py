"""Prometheus metrics (``GET /metrics``): requests, latencies, analyses in flight, and,
read at each scrape, the store's free space and the encoder's queue, failures and retries.

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
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
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
        self._watched = _Watched()
        self.registry.register(self._watched)

    def watch(self, store, encoder) -> None:
        """Read the store's free space and the encoder's queue and failures at each scrape
        (the app's, at start; a restarted app's replace them)."""
        self._watched.store, self._watched.encoder = store, encoder


class _Watched:
    """Gauges and counters read from the store and the encoder when /metrics is asked."""

    store = None
    encoder = None

    def collect(self):
        if self.store is not None:
            free = GaugeMetricFamily("dblge_store_free_bytes", "Free bytes on the result "
                                     "store's filesystem (DATA_DIR)")
            free.add_metric([], self.store.space.free())
            yield free
            floor = GaugeMetricFamily("dblge_store_min_free_bytes", "MIN_FREE_BYTES: below "
                                      "it new series are refused (507)")
            floor.add_metric([], self.store.space.min_free_bytes)
            yield floor
        if self.encoder is not None:
            queued = GaugeMetricFamily("dblge_encoding_queue", "Analyses waiting for their "
                                       "SEG and SR (the one encoding included)")
            queued.add_metric([], self.encoder.pending())
            yield queued
            for name, counts, text in (
                    ("dblge_encoding_failures", self.encoder.failures,
                     "Failed tries at a SEG and SR, by reason (internal: a bug; storage)"),
                    ("dblge_encoding_retries", self.encoder.retries,
                     "Tries again at a SEG and SR, by reason")):
                family = CounterMetricFamily(name, text, labels=("reason",))
                for reason in ("internal", "storage"):
                    family.add_metric([reason], counts[reason])
                yield family
            given_up = CounterMetricFamily("dblge_encoding_given_up", "Encodings given up "
                                           "on after ENCODING_MAX_ATTEMPTS (GETs answer 500)")
            given_up.add_metric([], self.encoder.given_up)
            yield given_up


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
