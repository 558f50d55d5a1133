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


@pytest.fixture(scope="session", autouse=True)
def frames_match_the_asyncapi_document() -> Iterator[None]:
    """Every frame a server sends during the contract tests is recorded (at the one place
    frames leave a connection) and validated against docs/asyncapi.yaml at the end."""
    import orjson
    from protocol_schema import problems

    from services.kit.connection import Connection

    seen: list[tuple[str, bytes]] = []
    send, deliver = Connection.send, Connection.deliver

    def recording_send(self: Connection, frame: bytes, op: str) -> None:
        seen.append((self._metrics.service, frame))
        send(self, frame, op)

    def recording_deliver(self: Connection, channel: str, publication: Any, frame: bytes) -> bool:
        seen.append((self._metrics.service, frame))
        return deliver(self, channel, publication, frame)  # the hub counts what was queued

    Connection.send = recording_send  # type: ignore[method-assign]
    Connection.deliver = recording_deliver  # type: ignore[method-assign]
    try:
        yield
    finally:
        Connection.send, Connection.deliver = send, deliver  # type: ignore[method-assign]
    found: list[str] = []
    for service, frame in seen:
        found.extend(problems(service, orjson.loads(frame)))
    if found:
        unique = sorted(set(found))
        pytest.fail(
            f"{len(found)} of {len(seen)} server frames do not match docs/asyncapi.yaml:\n"
            + "\n".join(unique[:30]),
            pytrace=False,
        )
