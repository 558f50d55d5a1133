"""The e2e core against nginx in front instead of Traefik (compose.nginx.yaml).

The tests are the Traefik suite's own functions, imported: pytest collects them here again
and gives them this module's `stack` fixture, a stack of its own started with the nginx
overlay. TLS, pages, routing, handshake refusals, chat across replicas, resume, a replica
killed mid-conversation: the same assertions, only the front differs.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator

import pytest
from stack import Stack
from stack_fixtures import compose_files, wait_until_routed
from test_stack import (
    test_chat_across_replicas,
    test_handshake_refusals_through_traefik,
    test_http_redirects_to_https,
    test_internal_endpoints_are_not_routed,
    test_pages_are_served_over_verified_tls,
    test_resume_with_since_gets_exactly_the_missed,
    test_telephony_call_through_traefik,
    test_ticker_notification_api,
)
from test_stack_kill import test_kill_9_a_replica_mid_conversation_loses_no_acknowledged_message

__all__ = [
    "test_chat_across_replicas",
    "test_handshake_refusals_through_traefik",
    "test_http_redirects_to_https",
    "test_internal_endpoints_are_not_routed",
    "test_kill_9_a_replica_mid_conversation_loses_no_acknowledged_message",
    "test_pages_are_served_over_verified_tls",
    "test_resume_with_since_gets_exactly_the_missed",
    "test_telephony_call_through_traefik",
    "test_ticker_notification_api",
]

COMPOSE_FILES = ("compose.yaml", "compose.nginx.yaml")


def compose(stack: Stack, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return compose_files(stack, *args, timeout=timeout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    nginx_stack = Stack.create(
        tmp_path_factory.mktemp("nginx"), chat_replicas=3, ticker_replicas=1, telephony_replicas=2
    )
    nginx_stack.project = nginx_stack.project.replace("wwws-e2e-", "wwws-nginx-")
    nginx_stack.files = COMPOSE_FILES
    nginx_stack.write_env_file()
    try:
        started = compose(nginx_stack, "up", "-d", "--no-build", "--wait", "--wait-timeout", "180")
        assert started.returncode == 0, started.stderr[-3000:]
        assert not nginx_stack.containers("traefik"), "the nginx overlay must leave Traefik out"
        assert nginx_stack.containers("nginx")
        asyncio.run(wait_until_routed(nginx_stack))
        yield nginx_stack
    finally:
        compose(nginx_stack, "down", "-v", "--remove-orphans", "--timeout", "10")
        nginx_stack.remove_leftovers()


async def test_nginx_follows_scaling_through_dockers_dns(stack: Stack):
    """A replica added after nginx started takes connections within a few seconds: the
    service name is re-resolved, not fixed at start."""
    scaled = compose(stack, "up", "-d", "--no-build", "--wait", "--scale", "chat=4")
    assert scaled.returncode == 0, scaled.stderr[-3000:]
    new_nodes = {c.id[:12] for c in stack.containers("chat")}
    assert len(new_nodes) == 4
    seen: set[str] = set()
    async with stack.session() as session:
        for attempt in range(60):
            ws, hello = await stack.connect(session, "chat", f"scaled{attempt}")
            seen.add(hello["node"])
            await ws.close()
            if len(seen) == 4:
                break
            await asyncio.sleep(0.2)
    assert {node[:12] for node in seen} == new_nodes
