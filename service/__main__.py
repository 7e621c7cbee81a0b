"""``python -m service``: serve ``service.api.app:app`` on ``$HOST:$PORT``."""

from __future__ import annotations

import uvicorn

from service import logs
from service.config import get_settings


def main() -> None:
    settings = get_settings()
    logs.configure()
    uvicorn.run("service.api.app:app", host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
