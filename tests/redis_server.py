"""A real Redis for the tests: a container of the stack's Redis image, via the Docker SDK.

``WWWS_TEST_REDIS_URL`` points the tests at a Redis you run yourself instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
    client = docker.from_env()
    container = client.containers.run(
        redis_image(),
        ["redis-server", "--save", "", "--appendonly", "no"],
        detach=True,
        ports={"6379/tcp": ("127.0.0.1", None)},
        labels={"wwws.test": "redis"},
    )
    try:
        deadline = time.monotonic() + 30
        url = ""
        while time.monotonic() < deadline:
            container.reload()
            bindings = container.ports.get("6379/tcp")
            if bindings:
                url = f"redis://127.0.0.1:{bindings[0]['HostPort']}/0"
                try:
                    redis.Redis.from_url(url, socket_timeout=1).ping()
                    break
                except redis.RedisError:
                    pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"redis container did not answer: {container.logs()[-500:]!r}")
        yield url
    finally:
        container.remove(force=True, v=True)  # and its anonymous /data volume
        client.close()
