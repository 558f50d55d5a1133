"""``python -m services.socket_proxy``: serve the read-only Docker API on
``WWWS_SOCKET_PROXY_PORT`` (2375) for the socket at ``WWWS_DOCKER_SOCKET``."""

from __future__ import annotations

import os

from aiohttp import web

from services.kit.logs import configure_logging

from .proxy import build_proxy_app


def main() -> None:
    configure_logging(os.environ.get("WWWS_LOG_LEVEL", "INFO"), "socket-proxy", "socket-proxy")
    socket_path = os.environ.get("WWWS_DOCKER_SOCKET", "/var/run/docker.sock")
    port = int(os.environ.get("WWWS_SOCKET_PROXY_PORT", "2375"))
    web.run_app(build_proxy_app(socket_path), host="0.0.0.0", port=port, print=None)


if __name__ == "__main__":
    main()
