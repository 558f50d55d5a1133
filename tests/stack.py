"""The real compose stack for the e2e and fault tests: its own project name, free ports,
cleanup."""

from __future__ import annotations

import secrets
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import docker
from helpers import receive_op

from services.kit.auth import mint_token

ROOT = Path(__file__).resolve().parents[1]
IMAGES_ENV = ROOT / "deploy" / "build" / "images.env"
CA_CERT = ROOT / "deploy" / "certs" / "ca.crt"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#") and "=" in line:
                name, _, value = line.partition("=")
                values[name.strip()] = value.strip()
    return values


def docker_gid() -> str:
    return str(Path("/var/run/docker.sock").stat().st_gid)


@dataclass
class Stack:
    project: str
    http_port: int
    https_port: int
    prometheus_port: int
    secret: str
    api_key: str
    chat_replicas: int
    ticker_replicas: int
    telephony_replicas: int
    env_file: Path
    admin_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    redis_password: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    drain_seconds: float = 3.0
    outbound_queue_bytes: int = 256 * 1024
    extra: dict[str, str] = field(default_factory=dict)
    #: the compose files the stack runs from (an overlay adds its own)
    files: tuple[str, ...] = ("compose.yaml",)

    @property
    def base(self) -> str:
        return f"https://localhost:{self.https_port}"

    @property
    def wss(self) -> str:
        return f"wss://localhost:{self.https_port}"

    def env(self) -> dict[str, str]:
        values = {
            key: value for key, value in read_env_file(IMAGES_ENV).items() if key.startswith("WWWS")
        }
        values.update(
            {
                "COMPOSE_PROJECT_NAME": self.project,
                "WWWS_TOKEN_SECRET": self.secret,
                "WWWS_TICKER_API_KEY": self.api_key,
                "WWWS_ADMIN_API_KEY": self.admin_key,
                "WWWS_REDIS_PASSWORD": self.redis_password,
                "WWWS_PUBLIC_URL": self.base,
                "WWWS_DEV_LOGIN": "1",
                "WWWS_DRAIN_SECONDS": str(self.drain_seconds),
                "WWWS_FEED_INTERVAL_SECONDS": "0.2",
                # small enough that the slow-consumer test fills it quickly
                "WWWS_OUTBOUND_QUEUE_BYTES": str(self.outbound_queue_bytes),
                "WWWS_BIND": "127.0.0.1",
                "HTTP_PORT": str(self.http_port),
                "HTTPS_PORT": str(self.https_port),
                "PROMETHEUS_PORT": str(self.prometheus_port),
                "CHAT_REPLICAS": str(self.chat_replicas),
                "TICKER_REPLICAS": str(self.ticker_replicas),
                "TELEPHONY_REPLICAS": str(self.telephony_replicas),
                "DOCKER_GID": docker_gid(),
                # Every test client comes from one address (the host), as a crowd of
                # users would not: the per-address edge limits are raised out of the way
                # here, and tests/security checks the defaults on a stack of its own.
                "WWWS_EDGE_REQUESTS_PER_SECOND": "100000",
                "WWWS_EDGE_REQUESTS_BURST": "100000",
                "WWWS_EDGE_OPEN_REQUESTS": "100000",
                # the heartbeat reaches its ceiling at 2,000 connections per replica (20,000
                # by default), so that the e2e test sees it move with a few thousand
                "WWWS_HEARTBEAT_CONNECTIONS_AT_CEILING": "2000",
            }
        )
        values.update(self.extra)
        return values

    def write_env_file(self) -> None:
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in sorted(self.env().items())))

    @classmethod
    def create(
        cls, workdir: Path, chat_replicas: int, ticker_replicas: int, telephony_replicas: int
    ) -> Stack:
        return cls(
            project=f"wwws-e2e-{secrets.token_hex(3)}",
            http_port=free_port(),
            https_port=free_port(),
            prometheus_port=free_port(),
            secret=secrets.token_urlsafe(32),
            api_key=secrets.token_urlsafe(16),
            chat_replicas=chat_replicas,
            ticker_replicas=ticker_replicas,
            telephony_replicas=telephony_replicas,
            env_file=workdir / "e2e.env",
        )

    # -- clients ---------------------------------------------------------------------
    def token(self, user: str) -> str:
        return mint_token(user, self.secret)

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies Traefik's certificate against the project's local CA (never disabled)."""
        return ssl.create_default_context(cafile=str(CA_CERT))

    @asynccontextmanager
    async def session(self) -> AsyncIterator[aiohttp.ClientSession]:
        connector = aiohttp.TCPConnector(ssl=self.ssl_context(), limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            yield session

    async def connect(
        self, session: aiohttp.ClientSession, service: str, user: str, **kwargs: Any
    ) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
        ws = await session.ws_connect(
            f"{self.wss}/{service}/ws", params={"token": self.token(user)}, **kwargs
        )
        hello = await receive_op(ws, "hello")
        return ws, hello

    # -- containers ------------------------------------------------------------------
    def containers(self, service: str) -> list[Any]:
        client = docker.from_env()
        try:
            return list(
                client.containers.list(
                    filters={
                        "label": [
                            f"com.docker.compose.project={self.project}",
                            f"com.docker.compose.service={service}",
                        ]
                    }
                )
            )
        finally:
            client.close()

    def container_for(self, node: str) -> Any:
        """The container whose hostname (the replica's node id) is ``node``."""
        for service in ("chat", "ticker", "telephony"):
            for container in self.containers(service):
                if container.id.startswith(node):
                    return container
        raise LookupError(node)

    def container_ip(self, container: Any) -> str:
        networks = container.attrs["NetworkSettings"]["Networks"]
        return str(networks[f"{self.project}_default"]["IPAddress"])

    def remove_leftovers(self) -> None:
        """Safety net after `down`: nothing labelled with this project survives a run."""
        client = docker.from_env()
        try:
            label = f"com.docker.compose.project={self.project}"
            for container in client.containers.list(all=True, filters={"label": label}):
                container.remove(force=True)
            for network in client.networks.list(filters={"label": label}):
                _remove_network(network)
            for volume in client.volumes.list(filters={"label": label}):
                volume.remove(force=True)
        finally:
            client.close()


def _remove_network(network: Any) -> None:
    """Remove a stack network. Docker 20.10 sometimes keeps a stale endpoint on a network
    no container is attached to any more ("has active endpoints", seen once in a full run
    after containers on two networks were killed and restarted); only an engine restart
    clears it. Then the leftover is named, not fatal: nothing of ours runs on it."""
    for attempt in range(5):
        try:
            network.remove()
            return
        except docker.errors.APIError as error:
            if "active endpoints" not in str(error):
                raise
            network.reload()
            if network.attrs.get("Containers") and attempt == 4:
                raise  # something of ours is still on it
            time.sleep(1)
    print(
        f"warning: network {network.name} keeps a stale endpoint with no container on it "
        "(a Docker engine bug); restarting dockerd removes it",
        file=sys.stderr,
    )
