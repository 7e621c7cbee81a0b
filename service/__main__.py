"""``python -m service``: serve ``service.api.app:app`` on ``$HOST:$PORT``."""

from __future__ import annotations

import ctypes
import ctypes.util

import uvicorn

from service import logs
from service.config import get_settings

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


def main() -> None:
    settings = get_settings()
    logs.configure()
    limit_malloc_arenas()
    uvicorn.run("service.api.app:app", host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
