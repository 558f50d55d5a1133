"""A real Redis Sentinel setup for the tests: a primary, two replicas and three
sentinels, containers of the stack's Redis image on a network of their own (Docker SDK).
Two replicas, so that after the primary is lost the promoted one still has a replica and
publications acknowledged by one replica (``ack_replicas=1``) go on.

The test process reaches them at their container addresses (the sentinels name the
primary by address, so its clients must reach that address). Everything is removed by id
when the block ends.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import docker
import redis
from redis_server import redis_image

MASTER = "wwws"
SENTINEL_CONF = """port 26379
sentinel resolve-hostnames no
sentinel monitor {master} {primary} 6379 2
sentinel auth-pass {master} {password}
sentinel down-after-milliseconds {master} 1000
sentinel failover-timeout {master} 10000
sentinel parallel-syncs {master} 1
"""


@dataclass
class SentinelCluster:
    network: Any
    password: str
    primary: Any
    replicas: list[Any] = field(default_factory=list)
    sentinels: list[Any] = field(default_factory=list)

    def address(self, container: Any) -> str:
        container.reload()
        return str(container.attrs["NetworkSettings"]["Networks"][self.network.name]["IPAddress"])

    def url(self, ack_replicas: int = 1, ack_timeout_ms: int = 1000) -> str:
        hosts = ",".join(f"{self.address(s)}:26379" for s in self.sentinels)
        query = f"ack_replicas={ack_replicas}&ack_timeout_ms={ack_timeout_ms}"
        return f"redis+sentinel://:{self.password}@{hosts}/{MASTER}/0?{query}"

    def current_primary(self) -> str:
        """The primary's address as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            try:
                client = redis.Redis(host=self.address(sentinel), port=26379, socket_timeout=1)
                host, _port = client.sentinel_get_master_addr_by_name(MASTER)
                return str(host)
            except (redis.RedisError, TypeError):
                continue
        raise RuntimeError("no sentinel answers")

    def data_node(self, address: str) -> redis.Redis:
        return redis.Redis(host=address, port=6379, password=self.password, socket_timeout=2)


def _wait(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not happen within {timeout}s")


@contextmanager
def running_sentinel_cluster() -> Iterator[SentinelCluster]:
    client = docker.from_env()
    label = {"wwws.test": "sentinel"}
    password = secrets.token_urlsafe(16)
    network = client.networks.create(f"wwws-sentinel-{secrets.token_hex(3)}", labels=label)
    started: list[Any] = []

    def run(*command: str, entrypoint: list[str] | None = None) -> Any:
        container = client.containers.run(
            redis_image(),
            list(command),
            entrypoint=entrypoint,
            detach=True,
            network=network.name,
            labels=label,
        )
        started.append(container)
        return container

    try:
        node_flags = ["--save", "", "--appendonly", "no", "--requirepass", password]
        primary = run("redis-server", *node_flags, "--masterauth", password)
        cluster = SentinelCluster(network, password, primary)
        primary_ip = cluster.address(primary)
        replica_flags = [*node_flags, "--masterauth", password, "--replicaof", primary_ip, "6379"]
        cluster.replicas = [run("redis-server", *replica_flags) for _ in range(2)]
        conf = SENTINEL_CONF.format(master=MASTER, primary=primary_ip, password=password)
        script = (
            f"printf '%s' '{conf}' > /tmp/sentinel.conf"
            " && exec redis-server /tmp/sentinel.conf --sentinel"
        )
        cluster.sentinels = [run("-c", script, entrypoint=["sh"]) for _ in range(3)]
        for container in cluster.replicas:
            replica = cluster.data_node(cluster.address(container))
            _wait(
                lambda r=replica: r.info("replication").get("master_link_status") == "up",
                "a replica's sync",
            )

        def every_sentinel_knows_both() -> bool:
            for sentinel in cluster.sentinels:
                probe = redis.Redis(host=cluster.address(sentinel), port=26379, socket_timeout=1)
                state = probe.sentinel_master(MASTER)
                if int(state.get("num-other-sentinels", 0)) < 2 or int(state["num-slaves"]) < 2:
                    return False
            return True

        _wait(every_sentinel_knows_both, "the sentinels' discovery")
        yield cluster
    finally:
        for container in started:
            container.remove(force=True, v=True)
        network.remove()
        client.close()
