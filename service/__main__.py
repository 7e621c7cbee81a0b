"""``python -m service``: serve ``service.api.app:app`` on ``$HOST:$PORT``.

One process per data folder (:mod:`service.store.lock`: a second exits at once, naming
the holder); SIGTERM drains before the server closes (:mod:`service.api.shutdown`).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import signal
from types import FrameType

import uvicorn

from service import logs
from service.config import get_settings
from service.errors import DataDirInUse
from service.store.lock import hold_data_dir

log = logging.getLogger("service")
# Exit status of a start refused because another process serves the data folder.
EXIT_DATA_DIR_IN_USE = 3

# glibc gives each thread that allocates at once an arena of its own and keeps what it
# freed there: with analyses in worker threads and the SEG and SR encoded in another,
# two arenas held 55 MiB less at the peak than glibc's default of eight per core
# (BENCHMARKS.md, "Service process"), at no measured cost in throughput.
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number (glibc's malloc.h)


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for the threads started from now on; False where the C
    library is not glibc (nothing changes there)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return bool(libc is not None and hasattr(libc, "mallopt")
                    and libc.mallopt(_M_ARENA_MAX, arenas) == 1)
    except OSError:
        return False


class DrainingServer(uvicorn.Server):
    """uvicorn's server, but the first SIGTERM or SIGINT drains the app while it still
    listens (clients are told 503 ``shutting_down``, not refused), then stops; a second
    signal stops at once, as uvicorn's own."""

    def __init__(self, config: uvicorn.Config, grace_s: float) -> None:
        super().__init__(config)
        self.grace_s = grace_s
        self._drain: asyncio.Task | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is not None or sig not in (signal.SIGTERM, signal.SIGINT) \
                or not self.started:
            super().handle_exit(sig, frame)
            return
        # Called between bytecodes of the loop's own (main) thread: schedule, do not await.
        self._drain = asyncio.get_event_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        from service.api.app import app
        from service.api.shutdown import drain

        try:
            await drain(app, self.grace_s)
        finally:
            self.should_exit = True


def main() -> None:
    settings = get_settings()
    logs.configure()
    try:
        # Before the models load: a second process on the folder stops within a second.
        hold_data_dir(settings.data_dir)
    except DataDirInUse as exc:
        log.critical("not starting: %s", exc.message)
        raise SystemExit(EXIT_DATA_DIR_IN_USE) from None
    limit_malloc_arenas()
    from service.api.app import app  # here: the lock is held before the app is made
    from service.api.shutdown import OPEN_REQUESTS_S

    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                            timeout_graceful_shutdown=OPEN_REQUESTS_S)
    DrainingServer(config, settings.shutdown_grace_s).run()


if __name__ == "__main__":
    main()
