"""A real Redis for the tests: a container of the stack's Redis image, via the Docker SDK.

``WWWS_TEST_REDIS_URL`` points the tests at a Redis you run yourself instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import redis

IMAGES_ENV = Path(__file__).resolve().parents[1] / "deploy" / "build" / "images.env"


def redis_image() -> str:
    if os.environ.get("WWWS_REDIS_IMAGE"):
        return os.environ["WWWS_REDIS_IMAGE"]
    if IMAGES_ENV.exists():
        for line in IMAGES_ENV.read_text().splitlines():
            name, _, value = line.partition("=")
            if name.strip() == "WWWS_REDIS_IMAGE" and value.strip():
                return value.strip()
    return "redis:7"


@contextmanager
def running_redis() -> Iterator[str]:
    if os.environ.get("WWWS_TEST_REDIS_URL"):
        yield os.environ["WWWS_TEST_REDIS_URL"]
        return
    with redis_container() as (_, url):
        yield url


@contextmanager
def redis_container(network: str | None = None) -> Iterator[tuple[Any, str]]:
    """A Redis container and the URL that reaches it: through a port on 127.0.0.1, or, on
    ``network``, at its own address there (a container the test can cut off its network)."""
    client = docker.from_env()
    placement: dict[str, Any] = (
        {"network": network} if network else {"ports": {"6379/tcp": ("127.0.0.1", None)}}
    )
    container = client.containers.run(
        redis_image(),
        ["redis-server", "--save", "", "--appendonly", "no"],
        detach=True,
        labels={"wwws.test": "redis"},
        **placement,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            container.reload()
            url = _url_of(container, network)
            if url:
                try:
                    redis.Redis.from_url(url, socket_timeout=1).ping()
                    break
                except redis.RedisError:
                    pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"redis container did not answer: {container.logs()[-500:]!r}")
        yield container, url
    finally:
        container.remove(force=True, v=True)  # and its anonymous /data volume
        client.close()


def _url_of(container: Any, network: str | None) -> str:
    if network:
        address = container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
        return f"redis://{address}:6379/0" if address else ""
    bindings = container.ports.get("6379/tcp")
    return f"redis://127.0.0.1:{bindings[0]['HostPort']}/0" if bindings else ""
