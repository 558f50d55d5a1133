"""The socket proxy forwards the read calls Traefik and Prometheus make to a Docker API
on a unix socket (a stand-in engine here, on a real socket), streams them, and refuses
every other call with 403 before it reaches the engine."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.socket_proxy.proxy import build_proxy_app, is_allowed


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/version", True),
        ("GET", "/v1.41/containers/json", True),
        ("GET", "/v1.24/containers/3f2a9c/json", True),
        ("HEAD", "/_ping", True),
        ("GET", "/events", True),
        ("GET", "/networks", True),
        ("GET", "/v1.41/services", True),
        ("GET", "/v1.41/tasks", True),
        ("GET", "/v1.41/nodes/kwmi5vh4ubkf49gx7scb7iod2", True),
        ("POST", "/v1.41/services/wwws_chat/update", False),
        ("POST", "/v1.41/services/create", False),
        ("DELETE", "/v1.41/services/wwws_chat", False),
        ("POST", "/v1.41/nodes/abc/update", False),
        ("GET", "/v1.41/secrets", False),
        ("POST", "/containers/create", False),
        ("POST", "/v1.41/containers/3f2a9c/start", False),
        ("DELETE", "/containers/3f2a9c", False),
        ("GET", "/containers/3f2a9c/logs", False),
        ("GET", "/containers/3f2a9c/archive", False),
        ("POST", "/containers/json", False),
        ("GET", "/containers/..%2F..%2Fexec/json", False),
        ("GET", "/v1.41/exec/abc/json", False),
        ("GET", "/images/json", False),
    ],
)
def test_only_read_calls_are_allowed(method, path, allowed):
    assert is_allowed(method, path) is allowed


async def test_forwards_streams_and_refuses(tmp_path):
    seen: list[tuple[str, str]] = []
    socket_path = str(tmp_path / "docker.sock")

    async def engine(request: web.Request) -> web.StreamResponse:
        seen.append((request.method, request.path_qs))
        if request.path.endswith("/events"):
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            for n in range(3):
                await response.write(b'{"n": %d}\n' % n)
                await asyncio.sleep(0.05)
            return response
        return web.json_response({"ApiVersion": "1.41"}, headers={"Api-Version": "1.41"})

    engine_app = web.Application()
    engine_app.router.add_route("*", "/{tail:.*}", engine)
    runner = web.AppRunner(engine_app)
    await runner.setup()
    await web.UnixSite(runner, socket_path).start()
    client = TestClient(TestServer(build_proxy_app(socket_path)))
    await client.start_server()
    try:
        version = await client.get("/v1.41/version?x=1")
        assert version.status == 200 and version.headers["Api-Version"] == "1.41"
        assert (await version.json())["ApiVersion"] == "1.41"
        events = await client.get("/events?filters=%7B%7D")
        lines = [line async for line in events.content]
        assert lines == [b'{"n": 0}\n', b'{"n": 1}\n', b'{"n": 2}\n']
        refused = await client.post("/containers/create", json={"Image": "alpine"})
        assert refused.status == 403 and "not allowed" in (await refused.json())["message"]
        assert seen == [("GET", "/v1.41/version?x=1"), ("GET", "/events?filters=%7B%7D")]
    finally:
        await client.close()
        await runner.cleanup()
