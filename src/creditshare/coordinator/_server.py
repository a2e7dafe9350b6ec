"""Running the coordinator under uvicorn.

On SIGTERM (or SIGINT) uvicorn stops accepting connections, lets requests in
flight finish (for up to ``shutdown_grace_seconds``, then cancels them), and
only then runs the app's shutdown, which closes the node channels. Logging is
the process's (``creditshare._logging.configure_logging``): uvicorn installs no
handlers of its own, so its lines come out in the same format.
"""

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
        log_config=None,
        log_level=settings.log_level,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_seconds)),
    )
    uvicorn.Server(config).run()
