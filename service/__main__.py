"""``python -m service``: serve ``service.app:app`` on ``$HOST:$PORT``."""

from __future__ import annotations

import uvicorn

from .config import get_settings


def main() -> None:
    settings = get_settings()
    uvicorn.run("service.app:app", host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
