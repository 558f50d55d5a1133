"""Faults to inflict on the compose stack, and putting it back together afterwards.

Docker calls block, so they run in threads: the clients keep working meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import docker
from helpers import eventually, receive_json
from netcut import NetCut
from stack import Stack
from stack_fixtures import compose_up

from clients.wwws import Client

__all__ = ["APP_SERVICES", "SCENARIOS", "FaultContext", "Scenario", "heal"]

APP_SERVICES = ("chat", "ticker", "telephony")
REDIS_OUTAGE_SECONDS = 3.0
# issue 12's case: 4 s away at 8 notifications/s is more than the 20 the automatic
# subscription brings back, so only a resume with `since` loses none
ABSENCE_SECONDS = 4.0
PARTITION_SECONDS = 8.0  # longer than the clients' heartbeat needs to notice (4 s + 2 s)
PROJECT_NETWORKS = ("default", "backplane")  # the app replicas are on both (compose.yaml)
HEALTHY_TIMEOUT = 90.0


@dataclass
class FaultContext:
    stack: Stack
    netcut: NetCut
    clients: dict[str, list[Client]]  # per service
    #: run once the scenario is checked, to put the stack back
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


@dataclass(frozen=True)
class Scenario:
    name: str
    inject: Callable[[FaultContext], Awaitable[None]]
    #: close codes a client may see (the fault's own, as docs/protocol.md defines them)
    close_codes: frozenset[int]
    #: the backplane keeps its state (calls): False where Redis loses its data
    state_kept: bool = True

    def __str__(self) -> str:
        return self.name


# -- docker helpers --------------------------------------------------------------------
async def in_thread(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(call, *args, **kwargs)


def busiest_replica(stack: Stack, clients: Iterable[Client]) -> Any:
    """The container serving most of ``clients``: the fault hits as many as it can."""
    node, _ = collections.Counter(client.node for client in clients).most_common(1)[0]
    assert node is not None
    return stack.container_for(node)


def healthy(container: Any) -> bool:
    container.reload()
    state = container.attrs["State"]
    return bool(state["Running"]) and state.get("Health", {}).get("Status") == "healthy"


async def wait_healthy(container: Any) -> None:
    await eventually(
        lambda: in_thread(healthy, container),
        timeout=HEALTHY_TIMEOUT,
        interval=0.5,
        what=f"{container.name} healthy",
    )


# a request per service that goes through the replica's backplane
PROBES: dict[str, dict[str, Any]] = {
    "chat": {"op": "sub", "id": 1, "ch": "faults-probe"},
    "ticker": {"op": "sub", "id": 1, "ch": "AAPL"},
    "telephony": {"op": "watch", "id": 1, "users": ["faults-probe"]},
}
PROBE_REPLIES = {"subscribed", "presence_state"}
PROBE_TIMEOUT = 5.0


async def reply_to(ws: aiohttp.ClientWebSocketResponse, frame_id: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PROBE_TIMEOUT
    while True:
        frame = await receive_json(ws, max(0.01, deadline - loop.time()))
        if frame.get("id") == frame_id:
            return dict(frame)


async def every_replica_routed(stack: Stack, service: str) -> None:
    """Traefik sends new connections to every running replica of ``service``, and each
    one serves them (its backplane answers): each node id shows up in a ``hello``
    followed by a good reply (the balancer spreads the probes)."""
    running = {c.id[:12] for c in await in_thread(stack.containers, service)}
    serving: set[str] = set()

    async def probe() -> None:
        async with stack.session() as session:
            ws, hello = await stack.connect(session, service, "faults-probe")
            try:
                await ws.send_json(PROBES[service])
                reply = await reply_to(ws, PROBES[service]["id"])
            finally:
                await ws.close()
        if reply["op"] in PROBE_REPLIES:
            serving.add(hello["node"])

    async def all_serving() -> bool:
        # A replica back from a fault may accept and then hang or refuse for a while:
        # that is a "not yet", and the bounded wait below says so if it lasts.
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, AssertionError):
            await probe()
        assert running <= serving, f"serving: {sorted(serving)} of {sorted(running)}"
        return True

    await eventually(
        all_serving, timeout=HEALTHY_TIMEOUT, interval=0.1, what=f"every {service} replica serving"
    )


async def heal(stack: Stack) -> None:
    """Every service back at its replica count, healthy, each replica routed."""
    await compose_up(stack, HEALTHY_TIMEOUT)
    for service in APP_SERVICES:
        await every_replica_routed(stack, service)


def the(stack: Stack, service: str) -> Any:
    [container] = stack.containers(service)
    return container


# -- the faults ------------------------------------------------------------------------
async def kill_busiest_replicas(ctx: FaultContext) -> None:
    """kill -9 the replica most of each service's clients are on: no drain, no close."""
    victims = [busiest_replica(ctx.stack, ctx.clients[s]) for s in APP_SERVICES]
    await asyncio.gather(*(in_thread(victim.kill) for victim in victims))


async def rolling_restart(ctx: FaultContext) -> None:
    """Restart every replica of every service, one replica of each at a time, as a
    deploy does: SIGTERM (drain, 1001), start, healthy and routed before the next."""
    by_service = {
        service: sorted(ctx.stack.containers(service), key=lambda c: c.name)
        for service in APP_SERVICES
    }
    for round_ in range(max(map(len, by_service.values()))):
        batch = [replicas[round_] for replicas in by_service.values() if round_ < len(replicas)]
        await asyncio.gather(*(in_thread(c.restart, timeout=20) for c in batch))
        for container in batch:
            await wait_healthy(container)
        for service in APP_SERVICES:
            await every_replica_routed(ctx.stack, service)


async def restart_redis(ctx: FaultContext) -> None:
    redis = the(ctx.stack, "redis")
    await in_thread(redis.restart, timeout=10)
    await wait_healthy(redis)


async def kill_redis(ctx: FaultContext) -> None:
    redis = the(ctx.stack, "redis")
    await in_thread(redis.kill)
    await asyncio.sleep(REDIS_OUTAGE_SECONDS)  # the outage itself
    await in_thread(redis.start)
    await wait_healthy(redis)


async def redis_loses_its_data(ctx: FaultContext) -> None:
    """Redis comes back empty: every stream starts a new epoch."""
    redis = the(ctx.stack, "redis")
    flush = ["redis-cli", "--no-auth-warning", "--user", "wwws", "--pass", ctx.stack.redis_password]
    result = await in_thread(redis.exec_run, [*flush, "FLUSHALL"])
    assert result.exit_code == 0, result.output
    await in_thread(redis.restart, timeout=10)
    await wait_healthy(redis)


async def restart_traefik(ctx: FaultContext) -> None:
    traefik = the(ctx.stack, "traefik")
    await in_thread(traefik.restart, timeout=15)
    await wait_healthy(traefik)


async def partition_busiest_replicas(ctx: FaultContext) -> None:
    """Cut the busiest replica of each service off the network (from Redis and from
    Traefik alike) for a while, then plug it back."""
    victims = [busiest_replica(ctx.stack, ctx.clients[s]) for s in APP_SERVICES]
    client = docker.from_env()
    try:
        # the front network (Traefik) and the backplane's (Redis)
        networks = [client.networks.get(f"{ctx.stack.project}_{n}") for n in PROJECT_NETWORKS]
        for victim in victims:
            for network in networks:
                await in_thread(network.disconnect, victim)
        try:
            await asyncio.sleep(PARTITION_SECONDS)  # the partition itself
        finally:
            for victim in victims:
                for network in networks:
                    await in_thread(network.connect, victim)
    finally:
        client.close()

    # Plugged back, a container gets a new address: its TCP connections to Redis (from
    # the old one) hang, and Traefik may not learn the address. An operator restarts
    # such a replica; here that happens once the scenario is checked.
    async def restart_victims() -> None:
        await asyncio.gather(*(in_thread(victim.restart, timeout=20) for victim in victims))

    ctx.cleanups.append(restart_victims)


async def clients_go_away(ctx: FaultContext) -> None:
    """Every client loses its network for a while (a train in a tunnel): connections
    drop without a close frame and reconnecting fails until it is back."""
    ctx.netcut.cut()
    try:
        await asyncio.sleep(ABSENCE_SECONDS)  # the absence itself
    finally:
        ctx.netcut.restore()


SCENARIOS = [
    Scenario("replica-kill-9", kill_busiest_replicas, frozenset({1006})),
    Scenario("rolling-restart", rolling_restart, frozenset({1001})),
    # a replica that cannot reach Redis past a grace closes its clients with 1013
    Scenario("redis-restart", restart_redis, frozenset({1013})),
    Scenario("redis-kill-9", kill_redis, frozenset({1013})),
    Scenario("redis-data-loss", redis_loses_its_data, frozenset({1013}), state_kept=False),
    Scenario("traefik-restart", restart_traefik, frozenset({1001, 1006})),
    Scenario("replica-partition", partition_busiest_replicas, frozenset({1006, 1013})),
    Scenario("client-absence", clients_go_away, frozenset({1006})),
]
