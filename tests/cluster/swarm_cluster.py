"""A real 3-node Docker Swarm for the cluster tests, built with the project's own scripts
(deploy/swarm/local-cluster.sh: engines in containers; deploy/swarm/deploy.sh: the stack),
reached from the test process only on 127.0.0.1 through the Traefik tasks' published
ports (TLS verified against the local CA) and, for control, through the manager's API."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import docker
from stack import IMAGES_ENV, ROOT, Stack, read_env_file

PREFIX = "wwws-test-node"
STACK = "wwwstest"
NODES = 3


def _free_run_of_ports(count: int) -> int:
    """A base port such that base+1..base+count are free on 127.0.0.1."""
    for _ in range(50):
        base = 20000 + secrets.randbelow(30000)
        try:
            for offset in range(1, count + 1):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise RuntimeError("no free run of ports")


@dataclass
class Edge:
    """One node's Traefik, as the chat helpers want a stack (wss URL, tokens, TLS verified
    against the local CA, sessions): the compose stack's own methods, on this port."""

    https_port: int
    secret: str

    base = Stack.base
    wss = Stack.wss
    token = Stack.token
    ssl_context = Stack.ssl_context
    session = Stack.session
    connect = Stack.connect


@dataclass
class SwarmCluster:
    http_base: int
    https_base: int
    prometheus_port: int
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    redis_password: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    admin_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    outer: Any = field(default_factory=docker.from_env)
    manager: Any = None

    # -- the scripts ------------------------------------------------------------------
    def script_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({k: v for k, v in read_env_file(IMAGES_ENV).items() if k.startswith("WWWS")})
        env.update(
            {
                "WWWS_CLUSTER": PREFIX,
                "WWWS_CLUSTER_HTTP_BASE": str(self.http_base),
                "WWWS_CLUSTER_HTTPS_BASE": str(self.https_base),
                "WWWS_CLUSTER_PROMETHEUS_PORT": str(self.prometheus_port),
                "WWWS_STACK": STACK,
                # pages and the admin socket check Origin: every node's Traefik is an origin
                "WWWS_ALLOWED_ORIGINS": ",".join(
                    f"https://localhost:{self.https_base + node}" for node in range(1, NODES + 1)
                ),
                "WWWS_TOKEN_SECRET": self.secret,
                "WWWS_REDIS_PASSWORD": self.redis_password,
                "WWWS_TICKER_API_KEY": secrets.token_urlsafe(16),
                "WWWS_ADMIN_API_KEY": self.admin_key,
                "CHAT_REPLICAS": "3",
                "TICKER_REPLICAS": "1",
                "TELEPHONY_REPLICAS": "1",
                # every test client comes from one address: the edge limits out of the way
                "WWWS_EDGE_REQUESTS_PER_SECOND": "100000",
                "WWWS_EDGE_REQUESTS_BURST": "100000",
                "WWWS_EDGE_OPEN_REQUESTS": "100000",
                # the scaler, on connections only (lag and CPU are noisy on a shared 2-core
                # machine running three engines), quick enough for a test
                "WWWS_SCALER": "1",
                "WWWS_SCALER_INTERVAL_SECONDS": "2",
                "WWWS_SCALER_COOLDOWN_SECONDS": "6",
                "WWWS_SCALER_CONNECTIONS_PER_REPLICA": "20",
                "WWWS_SCALER_LAG_SECONDS": "5",
                "WWWS_SCALER_CPU": "4",
                "CHAT_MIN_REPLICAS": "3",
                "CHAT_MAX_REPLICAS": "4",
                "TICKER_MIN_REPLICAS": "1",
                "TELEPHONY_MIN_REPLICAS": "1",
                "WWWS_SENTINEL_DOWN_AFTER_MS": "1000",
            }
        )
        env.pop("DOCKER_HOST", None)
        return env

    def run(self, *args: str, manager: bool = False, timeout: float = 600) -> str:
        env = self.script_env()
        if manager:
            env["DOCKER_HOST"] = self.manager_url
        done = subprocess.run(
            list(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
        print(done.stdout[-3000:], done.stderr[-3000:])
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}"
            )
        return done.stdout

    @property
    def manager_url(self) -> str:
        node = self.outer.containers.get(f"{PREFIX}1")
        address = next(iter(node.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
        return f"tcp://{address}:2375"

    def up(self) -> None:
        self.run("bash", "deploy/swarm/local-cluster.sh", "up", str(NODES))
        self.manager = docker.DockerClient(base_url=self.manager_url, timeout=30)
        self.run("bash", "deploy/swarm/deploy.sh", manager=True)
        # Swarm says every task runs; Traefik routes to them once its provider polled
        # (every 2 s) and the health checks passed: wait for that, as a user would
        took = self.wait_for(self._edges_answer, "every Traefik routing to the services", 90)
        print(f"every Traefik answers {took:.1f}s after the deploy converged")

    def _edges_answer(self) -> bool:
        for edge in self.edges():
            context = edge.ssl_context()
            for path in ("/", "/chat/", "/ticker/", "/telephony/", "/admin/"):
                url = f"{edge.base}{path}"
                try:
                    with urllib.request.urlopen(url, timeout=3, context=context) as response:
                        if response.status != 200:
                            return False
                except OSError:
                    return False
        return True

    def down(self) -> None:
        if self.manager is not None:
            self.manager.close()
        self.run("bash", "deploy/swarm/local-cluster.sh", "down")

    # -- what runs where ----------------------------------------------------------------
    def service(self, name: str) -> Any:
        return self.manager.services.get(f"{STACK}_{name}")

    def running_tasks(self, name: str) -> list[dict[str, Any]]:
        tasks = self.service(name).tasks(filters={"desired-state": "running"})
        return [t for t in tasks if t["Status"]["State"] == "running"]

    def node_name(self, node_id: str) -> str:
        return str(self.manager.nodes.get(node_id).attrs["Description"]["Hostname"])

    def task_nodes(self, name: str) -> dict[str, str]:
        """container id (12 chars, = the replica's hello node) -> node hostname"""
        return {
            t["Status"]["ContainerStatus"]["ContainerID"][:12]: self.node_name(t["NodeID"])
            for t in self.running_tasks(name)
        }

    def edge(self, node: str) -> Edge:
        return Edge(self.https_base + int(node.removeprefix(PREFIX)), self.secret)

    def edges(self) -> list[Edge]:
        """One per node that runs a Traefik task."""
        nodes = sorted(set(self.task_nodes("traefik").values()))
        return [self.edge(node) for node in nodes]

    def in_node(self, node: str, *command: str) -> str:
        """A docker command run by a node's own engine."""
        result = self.outer.containers.get(node).exec_run(["docker", *command])
        output = result.output.decode(errors="replace")
        if result.exit_code != 0:
            raise RuntimeError(f"{node}: docker {' '.join(command)}: {output}")
        return str(output)

    def prometheus_query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        query = urllib.parse.urlencode({"query": promql})
        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/query?{query}"
        with urllib.request.urlopen(url, timeout=5) as response:
            result = json.load(response)["data"]["result"]
        return [(r["metric"], float(r["value"][1])) for r in result]

    def task_container(self, name: str) -> tuple[str, str]:
        """(node hostname, container id) of the service's first running task"""
        task = self.running_tasks(name)[0]
        return self.node_name(task["NodeID"]), task["Status"]["ContainerStatus"]["ContainerID"]

    def redis_primary(self) -> str:
        """The Redis service the Sentinels name as primary (redis-1, -2 or -3)."""
        return self.sentinel("get-master-addr-by-name", "wwws").split()[0]

    def sentinel(self, *command: str) -> str:
        """A SENTINEL command, answered by the first Sentinel task that answers."""
        for task in self.running_tasks("sentinel"):
            node = self.node_name(task["NodeID"])
            container = task["Status"]["ContainerStatus"]["ContainerID"]
            try:
                return self.in_node(
                    node, "exec", container, "redis-cli", "-p", "26379", "sentinel", *command
                )
            except RuntimeError:
                continue
        raise RuntimeError("no sentinel answers")

    def sentinel_views(self) -> dict[str, dict[str, str]]:
        """What each running Sentinel knows of the primary (SENTINEL MASTER), by node."""
        views = {}
        for task in self.running_tasks("sentinel"):
            node = self.node_name(task["NodeID"])
            container = task["Status"]["ContainerStatus"]["ContainerID"]
            reply = self.in_node(
                node, "exec", container, "redis-cli", "-p", "26379", "sentinel", "master", "wwws"
            ).split()
            views[node] = dict(zip(reply[::2], reply[1::2], strict=True))
        return views

    def service_logs(self, name: str, tail: int = 60) -> str:
        """The last lines of every container of the service on every node still up (a
        failed test prints them: what the replicas saw is what explains it)."""
        label = f"com.docker.swarm.service.name={STACK}_{name}"
        out = []
        for node in self.outer.containers.list(filters={"name": PREFIX}):
            try:
                ids = self.in_node(node.name, "ps", "-aq", "--filter", f"label={label}").split()
                for container in ids:
                    logs = self.in_node(node.name, "logs", "--tail", str(tail), container)
                    out.append(f"--- {node.name} {container} ---\n{logs}")
            except RuntimeError as exc:
                out.append(f"--- {node.name}: {exc}")
        return "\n".join(out)

    def move_redis_primary(self, onto: set[str], timeout: float = 90.0) -> None:
        """Fail the Redis primary over (SENTINEL FAILOVER) until one of the ``onto`` nodes
        runs it. The command is refused while the Sentinels have not found the replicas
        yet (NOGOODSLAVE, right after a deploy) or a failover is under way (INPROG), and
        may promote a replica on a node not in ``onto``: asked again until it lands."""
        deadline = time.monotonic() + timeout
        answers = []
        while True:
            primary = self.redis_primary()
            if next(iter(self.task_nodes(primary).values()), None) in onto:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the Redis primary ({primary}) not moved onto {sorted(onto)} within"
                    f" {timeout}s; the Sentinels answered {answers[-5:]}"
                )
            answers.append(self.sentinel("failover", "wwws").strip())
            # a failover the Sentinels accepted takes a few seconds to be visible
            self.wait_for(lambda was=primary: self.redis_primary() != was, "", 15, quiet=True)

    def kill_task(self, name: str) -> None:
        """kill -9 of the service's running task (no clean shutdown)."""
        node, container = self.task_container(name)
        self.in_node(node, "kill", "-s", "KILL", container)

    def kill_node(self, node: str) -> None:
        self.outer.containers.get(node).kill()

    def wait_for(
        self, check: Any, what: str, timeout: float = 90.0, *, quiet: bool = False
    ) -> float:
        """Seconds until ``check()`` holds; past ``timeout`` an AssertionError (or, with
        ``quiet``, the time waited)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            try:
                if check():
                    return time.monotonic() - start
            except (docker.errors.APIError, docker.errors.NotFound, RuntimeError):
                pass
            time.sleep(0.5)
        if quiet:
            return time.monotonic() - start
        raise AssertionError(f"{what}: not within {timeout}s")


@contextmanager
def running_swarm() -> Iterator[SwarmCluster]:
    base = _free_run_of_ports(2 * NODES + 1)
    cluster = SwarmCluster(
        http_base=base, https_base=base + NODES, prometheus_port=base + 2 * NODES + 1
    )
    cluster.run("bash", "deploy/swarm/local-cluster.sh", "down")  # an earlier run's leftovers
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()
