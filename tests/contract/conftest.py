"""Contract tests: each service in-process (pytest-aiohttp), on the memory backplane and,
with the same tests, on a real Redis (a container of the stack's Redis image)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis_server import running_redis
from replicas import Replicas

from services.kit.backplane import Backplane, MemoryBackplane, MemoryBroker, RedisBackplane


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with running_redis() as url:
        yield url


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backplane_factory(request: pytest.FixtureRequest) -> Callable[..., Backplane]:
    """Every contract test runs against the memory backplane and a real Redis."""
    if request.param == "memory":
        broker = MemoryBroker()
        return lambda **options: MemoryBackplane(broker, **options)
    url = request.getfixturevalue("redis_url")
    redis.Redis.from_url(url).flushdb()
    return lambda **options: RedisBackplane(url, **options)


@pytest.fixture
def replicas(backplane_factory: Callable[[], Backplane], aiohttp_client: Any) -> Replicas:
    return Replicas(backplane_factory, aiohttp_client)
