"""Contract tests: each service in-process (pytest-aiohttp), on the memory backplane and,
with the same tests, on a real Redis (a container of the stack's Redis image)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from backplanes import BackplaneFactory
from redis_server import running_redis
from replicas import Replicas


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with running_redis() as url:
        yield url


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backplane_factory(request: pytest.FixtureRequest) -> BackplaneFactory:
    """Every contract test runs against the memory backplane and a real Redis."""
    if request.param == "memory":
        return BackplaneFactory()
    return BackplaneFactory(request.getfixturevalue("redis_url"))


@pytest.fixture
def replicas(backplane_factory: BackplaneFactory, aiohttp_client: Any) -> Replicas:
    return Replicas(backplane_factory, aiohttp_client)
