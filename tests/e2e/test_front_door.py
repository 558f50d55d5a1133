"""The front door under a connection flood, and `make check` noticing a dead front door.

Docker's userland proxy (one docker-proxy process per published port, two descriptors per
connection) died under a few thousand plain TCP connections to :443 while every health
check stayed green. deploy/provision.sh turns it off (iptables NAT instead); these tests
hold that, and `deploy/check.sh` (make check, run by make up) reports the difference between
"containers unhealthy" and "containers healthy, public URL dead".
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import time

from stack import ROOT, Stack, free_port

FLOOD_CONNECTIONS = 10_000
# Opened concurrently in waves of this many; each wave is held open, then dropped.
WAVE = 2_500
CONNECT_TIMEOUT = 10.0


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def open_plain(port: int) -> asyncio.StreamWriter | None:
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError):
        return None
    return writer


async def page_answers(stack: Stack) -> int:
    async with stack.session() as session, session.get(stack.base + "/chat/") as response:
        return response.status


def docker_proxies_for(port: int) -> list[str]:
    found = subprocess.run(
        ["pgrep", "-af", f"docker-proxy.*-host-port {port}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.splitlines()


async def test_a_flood_of_plain_tcp_connections_leaves_the_front_door_answering(stack: Stack):
    """10,000 TCP connections (no TLS, no bytes) opened against the published HTTPS port in
    waves held open together, then dropped: every one is accepted, https answers while a wave
    is held and after the flood, and a WebSocket still connects."""
    fds = raise_fd_limit(WAVE + 2_000)
    wave = min(WAVE, fds - 500)
    assert wave >= 1_000, f"this process may open only {fds} descriptors"
    accepted = refused = 0
    started = time.monotonic()
    while accepted + refused < FLOOD_CONNECTIONS:
        count = min(wave, FLOOD_CONNECTIONS - accepted - refused)
        writers = await asyncio.gather(*(open_plain(stack.https_port) for _ in range(count)))
        held = [writer for writer in writers if writer is not None]
        accepted += len(held)
        refused += count - len(held)
        # While thousands of idle connections are held, a real client is still served.
        assert await page_answers(stack) == 200
        for writer in held:
            writer.close()
        await asyncio.gather(*(writer.wait_closed() for writer in held), return_exceptions=True)
    elapsed = time.monotonic() - started
    proxies = docker_proxies_for(stack.https_port)
    assert refused == 0, (
        f"{refused} of {FLOOD_CONNECTIONS} connections failed in {elapsed:.0f}s"
        + (f"; Docker's userland proxy serves the port: {proxies}" if proxies else "")
    )
    assert await page_answers(stack) == 200
    async with stack.session() as session:
        ws, hello = await stack.connect(session, "chat", "flood-survivor")
        assert hello["op"] == "hello"
        await ws.close()


def run_check(stack: Stack, url: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["COMPOSE"] = f"docker compose --env-file {stack.env_file} -f compose.yaml"
    env["COMPOSE_PROJECT_NAME"] = stack.project
    return subprocess.run(
        ["bash", "deploy/check.sh", url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_make_check_passes_on_a_healthy_stack(stack: Stack):
    result = run_check(stack, stack.base)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every health check passing" in result.stdout
    assert f"{stack.base}/chat/ answers 200" in result.stdout


def test_make_check_names_a_dead_front_door_behind_green_health_checks(stack: Stack):
    """Healthy containers, but the public URL leads nowhere (a port nothing listens on,
    as a dead published port looks from the host): the check fails and says so."""
    result = run_check(stack, f"https://localhost:{free_port()}")
    assert result.returncode == 1, result.stdout
    assert "every health check passing" in result.stdout
    assert "does not answer" in result.stdout
    assert "public URL does not answer" in result.stdout
