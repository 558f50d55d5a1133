"""What surrounds the services, on a real stack of its own (the shared e2e stack raises
the per-address edge limits, since all its clients come from the host): edge limits per
client address at Traefik, the Docker socket behind a read-only proxy, Redis on a network
Traefik is not on, the internal ports never published, and no secret in the environment
of a container that does not use it."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator

import aiohttp
import docker
import pytest
from stack import CA_CERT, IMAGES_ENV, Stack, read_env_file
from stack_fixtures import compose_files, wait_until_routed

#: lowered from the default (500) so that filling it takes 30 sockets, not 500
OPEN_PER_ADDRESS = 30
DEFAULT_RATE = 20  # requests per second per address
DEFAULT_BURST = 100


def compose(stack: Stack, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return compose_files(stack, *args, timeout=timeout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    own = Stack.create(
        tmp_path_factory.mktemp("security"),
        chat_replicas=1,
        ticker_replicas=1,
        telephony_replicas=1,
    )
    own.project = own.project.replace("wwws-e2e-", "wwws-sec-")
    # the defaults for the request rate (compose's ${...:-default} treats "" as unset)
    own.extra = {
        "WWWS_EDGE_REQUESTS_PER_SECOND": "",
        "WWWS_EDGE_REQUESTS_BURST": "",
        "WWWS_EDGE_OPEN_REQUESTS": str(OPEN_PER_ADDRESS),
    }
    own.write_env_file()
    try:
        started = compose(own, "up", "-d", "--no-build", "--wait", "--wait-timeout", "180")
        assert started.returncode == 0, started.stderr[-3000:]
        asyncio.run(wait_until_routed(own))
        yield own
    finally:
        compose(own, "down", "-v", "--remove-orphans", "--timeout", "10")
        own.remove_leftovers()


def run_in_network(stack: Stack, network: str, script: str) -> subprocess.CompletedProcess[str]:
    """Run a Python script in a throwaway container of the app image on one of the
    stack's networks: another client address, or a view from inside."""
    image = read_env_file(IMAGES_ENV).get("WWWS_APP_IMAGE", "wwws-app:dev")
    return subprocess.run(
        [
            "docker", "run", "--rm", "-i", "--network", f"{stack.project}_{network}",
            "--label", f"com.docker.compose.project={stack.project}",
            image, "python", "-",
        ],
        input=script, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_a_burst_from_one_address_gets_429_while_another_address_connects(stack: Stack):
    stop = asyncio.Event()
    statuses: list[int] = []

    async def flood() -> None:
        async with stack.session() as session:
            while not stop.is_set():
                batch = [
                    session.get(f"{stack.base}/chat/ws", params={"token": "not-a-token"})
                    for _ in range(20)
                ]
                for response in await asyncio.gather(*batch):
                    statuses.append(response.status)
                    response.release()

    flooding = asyncio.create_task(flood())
    try:
        for _ in range(100):
            if statuses.count(429) >= 10:
                break
            await asyncio.sleep(0.1)
        assert statuses.count(429) >= 10, statuses[-40:]
        other = await asyncio.to_thread(
            run_in_network, stack, "default", probe_script(stack, "other-address")
        )
        refused_while = statuses.count(429)
    finally:
        stop.set()
        await flooding
    assert other.returncode == 0, other.stderr[-2000:]
    assert json.loads(other.stdout.strip().splitlines()[-1]) == {"op": "hello", "ok": True}
    assert statuses.count(429) > refused_while, "the host was no longer refused meanwhile"
    # a refused request never reached a replica: they answered only the first burst (401)
    assert DEFAULT_BURST // 2 <= statuses.count(401) <= 3 * DEFAULT_BURST, statuses.count(401)


def probe_script(stack: Stack, user: str) -> str:
    """One handshake to Traefik from inside the front network: TLS checked against the
    project's CA for the name localhost, the TCP connection made to the traefik container."""
    return f"""
import asyncio, json, socket, ssl
import aiohttp
from aiohttp.abc import AbstractResolver

class ToTraefik(AbstractResolver):
    async def resolve(self, host, port=0, family=socket.AF_INET):
        address = socket.gethostbyname("traefik")
        return [{{"hostname": host, "host": address, "port": 443, "family": socket.AF_INET,
                  "proto": 0, "flags": 0}}]
    async def close(self):
        pass

async def main():
    context = ssl.create_default_context(cadata={CA_CERT.read_text()!r})
    connector = aiohttp.TCPConnector(ssl=context, resolver=ToTraefik())
    async with aiohttp.ClientSession(connector=connector) as session:
        token = {stack.token(user)!r}
        ws = await session.ws_connect("wss://localhost/chat/ws", params={{"token": token}})
        hello = await ws.receive_json(timeout=10)
        print(json.dumps({{"op": hello["op"], "ok": hello["user"] == {user!r}}}))
        await ws.close()

asyncio.run(main())
"""


async def test_one_address_holds_at_most_its_open_requests(stack: Stack):
    # a full bucket first: the flood test may have emptied it (20 per second refill it)
    await asyncio.sleep(DEFAULT_BURST / DEFAULT_RATE + 0.5)
    async with stack.session() as session:
        sockets = []
        try:
            for n in range(OPEN_PER_ADDRESS):
                ws = await session.ws_connect(
                    f"{stack.wss}/chat/ws", params={"token": stack.token(f"open{n}")}
                )
                sockets.append(ws)
                await asyncio.sleep(0.06)  # under the rate limit: only the open count matters
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(
                    f"{stack.wss}/chat/ws", params={"token": stack.token("one-too-many")}
                )
            assert refused.value.status == 429
            await sockets.pop().close()
            await asyncio.sleep(0.5)
            sockets.append(
                await session.ws_connect(
                    f"{stack.wss}/chat/ws", params={"token": stack.token("freed")}
                )
            )
        finally:
            for ws in sockets:
                await ws.close()


def test_the_docker_socket_is_behind_a_read_only_proxy(stack: Stack):
    client = docker.from_env()
    try:
        for service in ("traefik", "prometheus"):
            for container in stack.containers(service):
                mounts = [m["Source"] for m in container.attrs["Mounts"]]
                assert "/var/run/docker.sock" not in mounts, (service, mounts)
    finally:
        client.close()
    script = """
import json, urllib.request, urllib.error
def call(method, path, body=None):
    request = urllib.request.Request("http://socket-proxy:2375" + path, method=method,
        data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
print(json.dumps({
    "version": call("GET", "/version"),
    "list": call("GET", "/v1.41/containers/json"),
    "create": call("POST", "/containers/create", b'{"Image": "alpine"}'),
    "exec": call("POST", "/v1.41/containers/x/exec", b"{}"),
    "delete": call("DELETE", "/containers/x"),
}))
"""
    result = run_in_network(stack, "docker-api", script)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "version": 200, "list": 200, "create": 403, "exec": 403, "delete": 403,
    }  # fmt: skip


def test_redis_is_out_of_reach_from_the_front_network(stack: Stack):
    script = """
import json, socket
def reachable(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return True
    except OSError:
        return False
print(json.dumps({"redis": reachable("redis", 6379), "traefik": reachable("traefik", 443)}))
"""
    from_front = run_in_network(stack, "default", script)
    assert from_front.returncode == 0, from_front.stderr[-2000:]
    assert json.loads(from_front.stdout.strip().splitlines()[-1]) == {
        "redis": False, "traefik": True,
    }  # fmt: skip
    traefik = stack.containers("traefik")[0]
    assert set(traefik.attrs["NetworkSettings"]["Networks"]) == {
        f"{stack.project}_default", f"{stack.project}_docker-api",
    }  # fmt: skip
    redis = stack.containers("redis")[0]
    assert set(redis.attrs["NetworkSettings"]["Networks"]) == {f"{stack.project}_backplane"}


def test_internal_ports_are_never_published(stack: Stack):
    for service in ("chat", "ticker", "telephony", "admin", "ticker-feed", "redis"):
        for container in stack.containers(service):
            published = {
                port: bindings
                for port, bindings in container.attrs["NetworkSettings"]["Ports"].items()
                if bindings
            }
            assert published == {}, (service, published)


def test_no_secret_where_it_is_not_used(stack: Stack):
    def environment(service: str) -> dict[str, str]:
        container = stack.containers(service)[0]
        return dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])

    feed = environment("ticker-feed")
    assert "WWWS_TOKEN_SECRET" not in feed and "WWWS_API_KEY" not in feed
    assert not any(stack.api_key in value or stack.secret in value for value in feed.values())
    for service in ("chat", "telephony"):
        env = environment(service)
        assert "WWWS_API_KEY" not in env
        assert not any(stack.api_key in v or stack.admin_key in v for v in env.values())
    proxy = environment("socket-proxy")
    assert not any(stack.secret in v or stack.redis_password in v for v in proxy.values())
