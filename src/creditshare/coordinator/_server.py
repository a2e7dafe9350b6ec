"""Running the coordinator under uvicorn."""

from __future__ import annotations

import uvicorn

from creditshare.coordinator._app import create_app
from creditshare.coordinator._settings import CoordinatorSettings

__all__ = ["serve"]


def serve(settings: CoordinatorSettings) -> None:
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
    )
    uvicorn.Server(config).run()
