"""The compose stack fixtures (pytest-docker), reached through Traefik + TLS.

A plugin (registered by tests/conftest.py) rather than tests/e2e/conftest.py, so that
tests/e2e and tests/faults share ONE session stack: starting it is the slow part. The
fault suite runs after the e2e tests (pytest collects e2e/ before faults/) and puts the
stack back together after each fault.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from stack import ROOT, Stack

CHAT_REPLICAS = 3
# two of each, so that a replica's death leaves another for its clients
TICKER_REPLICAS = 2
TELEPHONY_REPLICAS = 2

MARKED_FOLDERS = {
    "tests/e2e/": pytest.mark.e2e,
    "tests/faults/": pytest.mark.faults,
    "tests/security/": pytest.mark.e2e,  # a real stack of its own
    "tests/cluster/": pytest.mark.cluster,  # a 3-node Swarm of its own
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for folder, mark in MARKED_FOLDERS.items():
            if folder in str(item.path):
                item.add_marker(mark)


@pytest.fixture(scope="session")
def stack_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack.create(
        tmp_path_factory.mktemp("e2e"),
        chat_replicas=CHAT_REPLICAS,
        ticker_replicas=TICKER_REPLICAS,
        telephony_replicas=TELEPHONY_REPLICAS,
    )
    stack.write_env_file()
    # Compose lets the shell's environment win over --env-file, and `make` exports some of
    # these (WWWS_PUBLIC_URL, COMPOSE_PROJECT_NAME...) for the user's own stack.
    saved = {key: os.environ.get(key) for key in stack.env()}
    os.environ.update(stack.env())
    yield stack
    stack.remove_leftovers()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def docker_compose_command(stack_config: Stack) -> str:
    # Our own env file: a developer's .env (ports, secrets) never leaks into the test stack.
    return f'docker compose --env-file "{stack_config.env_file}"'


@pytest.fixture(scope="session")
def docker_compose_file() -> list[str]:
    return [str(ROOT / "compose.yaml")]


@pytest.fixture(scope="session")
def docker_compose_project_name(stack_config: Stack) -> str:
    return stack_config.project


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    # Images are built by `make images` before the tests; --wait blocks until healthy.
    return ["up -d --no-build --wait --wait-timeout 180"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    # A failed `down` is followed by Stack.remove_leftovers (stack_config), which removes
    # what remains by label and says what it could not.
    return ["down -v --remove-orphans --timeout 10 || echo 'compose down failed'"]


@pytest.fixture(scope="session")
def stack(docker_services: object, stack_config: Stack) -> Stack:
    """The stack, once Traefik routes every service (its docker provider lags `up`)."""
    asyncio.run(wait_until_routed(stack_config))
    return stack_config


def compose_files(
    stack: Stack, *args: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """``docker compose`` on a stack of a test module's own, with its compose files; the
    stack's values win over whatever the shell exports (make exports some of them)."""
    command = ["docker", "compose", "--env-file", str(stack.env_file)]
    for name in stack.files:
        command += ["-f", str(ROOT / name)]
    env = {**os.environ, **stack.env()}
    return subprocess.run(
        [*command, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


async def compose_up(stack: Stack, timeout: float = 90.0) -> None:
    """Every service back at its replica count and healthy (after a test killed or
    stopped some), then routed by Traefik."""
    command = ["docker", "compose", "--env-file", str(stack.env_file), "-p", stack.project]
    for name in stack.files:
        command += ["-f", str(ROOT / name)]
    command += ["up", "-d", "--no-build", "--wait"]
    command += ["--wait-timeout", str(int(timeout))]
    # this stack's values, not whatever stack the session exported (compose lets the
    # shell's environment win over --env-file)
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **stack.env()},
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode(errors="replace")
    await wait_until_routed(stack)


async def wait_until_routed(stack: Stack, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    pending = {"/chat/", "/ticker/", "/telephony/"}
    async with stack.session() as session:
        while pending and time.monotonic() < deadline:
            for path in list(pending):
                try:
                    async with session.get(stack.base + path) as response:
                        if response.status == 200:
                            pending.discard(path)
                except aiohttp.ClientError:
                    pass
            await asyncio.sleep(0.5)
    if pending:
        raise RuntimeError(f"Traefik did not route {sorted(pending)} within {timeout}s")
    # Every chat replica must be in Traefik's pool before tests count on spreading.
    await asyncio.sleep(2)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
