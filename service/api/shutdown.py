"""A clean stop: SIGTERM drains the process before uvicorn closes it.

On the first SIGTERM (or Ctrl-C) :func:`drain` runs while the server still listens, so
that a client is told rather than refused a connection:

1. new work is refused: ``POST /v1/analyses`` and STOW-RS answer 503 ``shutting_down``
   with ``Retry-After`` (:func:`taking_work`), ``/readyz`` answers 503, and the STOW-RS
   loop starts no new series;
2. what is in flight finishes, for at most ``SHUTDOWN_GRACE_S``: requests that bring work,
   every analysis (uploads, ones answered 202, received series) and the SEG/SR
   encodings queued after answers;
3. the server then stops as before (the app's lifespan closes the stores).

What the grace does not cover is parked, durably, where a start finds it: an accepted
analysis is stored before its answer; a stored analysis without SEG and SR is encoded at
start (:meth:`service.encoding.Encoder.start`); a received series not yet analysed stays
``waiting`` in the inbox (an interrupted one is reset to ``waiting``). An upload still
being analysed when the grace ends is answered 503 ``shutting_down`` (send it again). A
second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import FastAPI, Request

from service.errors import ShuttingDown

log = logging.getLogger("service")

# What a restart takes, for Retry-After (models load and warm up in a few seconds).
RETRY_AFTER_S = 10
# An encoding already begun when the grace ends is let finish for this long (a few tenths
# of a second normally): its files are atomic anyway, but nothing is left half-done.
LAST_ENCODING_S = 5.0
# After the drain, how long the server waits for open requests (GETs; ones past the grace
# were answered 503) before it cancels them.
OPEN_REQUESTS_S = 10
# How often the drain looks whether the encoder is idle.
POLL_S = 0.05


def init(app: FastAPI) -> None:
    """The app's stop state, before it serves."""
    app.state.draining = False
    app.state.work_requests = 0  # requests that bring work, being served now
    app.state.grace_ended = asyncio.Event()
    app.state.drain_deadline = None  # time.monotonic() by which the drain ends


def draining(app: FastAPI) -> bool:
    return bool(getattr(app.state, "draining", False))


async def taking_work(request: Request):
    """A dependency of the routes that bring work: refused once stopping, else counted
    until it ends (the drain waits for it)."""
    state = request.app.state
    if state.draining:
        raise ShuttingDown("the service is stopping and takes no new work; send this again "
                           "in a moment, to the process that replaces it",
                           retry_after_s=RETRY_AFTER_S)
    state.work_requests += 1
    try:
        yield
    finally:
        state.work_requests -= 1


async def finished_in_time(app: FastAPI, work: asyncio.Future, timeout_s: float) -> bool:
    """Wait for ``work`` at most ``timeout_s``; True when done. Raises ShuttingDown when the
    stop's grace ends first (the client is answered, not dropped)."""
    ended = asyncio.ensure_future(app.state.grace_ended.wait())
    try:
        done, _ = await asyncio.wait({work, ended}, timeout=timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        ended.cancel()
    if work in done:
        return True
    if ended in done:
        raise ShuttingDown("the service stopped before this analysis finished (its grace "
                           "period, SHUTDOWN_GRACE_S, ended); send the series again",
                           retry_after_s=RETRY_AFTER_S)
    return False


def remaining_s(app: FastAPI, default: float) -> float:
    """Seconds left of the stop's grace; ``default`` when no drain ran (tests, Ctrl-C in
    a debugger)."""
    deadline = getattr(app.state, "drain_deadline", None)
    return default if deadline is None else max(0.0, deadline - time.monotonic())


async def drain(app: FastAPI, grace_s: float) -> bool:
    """Refuse new work and wait for what is in flight, at most ``grace_s``; True when all
    of it finished (else what is left is parked, as the module says)."""
    state = app.state
    if getattr(state, "registry", None) is None or state.draining:
        return True  # not serving yet (still loading models), or draining already
    state.drain_deadline = time.monotonic() + grace_s
    state.draining = True
    encoder = state.encoder
    log.info("stopping: no new work taken; waiting up to %g s for %d request(s) bringing "
             "work and %d queued encoding(s)", grace_s, state.work_requests,
             encoder.pending())
    started = time.monotonic()
    finished = await _all_done(app)
    if finished:
        log.info("stopping: everything in flight finished in %.1f s",
                 time.monotonic() - started)
    else:
        state.grace_ended.set()
        log.warning("stopping: the grace period (SHUTDOWN_GRACE_S=%g s) ended with %d "
                    "encoding(s) left, done at the next start, and %d request(s) bringing "
                    "work unfinished", grace_s, encoder.pending(), state.work_requests)
    return finished


async def _all_done(app: FastAPI) -> bool:
    state = app.state
    slots: asyncio.Semaphore = state.slots
    total = state.settings.max_concurrent_analyses
    taken = 0
    try:
        # Every analysis slot free at once: no analysis runs (an upload's, one answered
        # 202, a received series'), and none can start since new work is refused.
        while taken < total:
            await asyncio.wait_for(slots.acquire(), remaining_s(app, 0.0))
            taken += 1
        while state.work_requests or state.encoder.pending():
            if remaining_s(app, 0.0) <= 0:
                return False
            await asyncio.sleep(POLL_S)
        return True
    except TimeoutError:
        return False
    finally:
        for _ in range(taken):
            slots.release()

