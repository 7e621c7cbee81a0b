"""``python -m service``: serve ``service.app:app`` on ``$HOST:$PORT``."""

from __future__ import annotations

import logging

import uvicorn

from .config import get_settings


def main() -> None:
    settings = get_settings()
    # The service's own log (analysis ids, UIDs, timings; never patient names or IDs).
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run("service.app:app", host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
