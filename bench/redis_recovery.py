"""`python -m bench.redis_recovery` (make bench-redis): how long Redis takes to come back.

A restarted Redis answers nothing (LOADING) until it has read its data back: the RDB base
of the append-only file, then every command logged since the last rewrite. This fills a
Redis with chat traffic through the kit's own broker (the same XADDs, trims and expiries a
chat room makes), stops it, starts it and times until PING answers and until a publish
is acknowledged again. It does so for the persistence settings of compose.yaml's redis
service and for plain `--appendonly yes` (the earlier settings), in one run, so the ratio
holds on any machine. Only the project's own containers, on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import orjson
import redis

from services.kit.backplane import RedisBackplane

ROOT = Path(__file__).resolve().parents[1]
IMAGES_ENV = ROOT / "deploy" / "build" / "images.env"
EARLIER = ["redis-server", "--appendonly", "yes", "--dir", "/data", "--protected-mode", "no"]
BATCH = 200
PASSWORD = "bench-redis-password"


@dataclass
class Outcome:
    name: str
    aof_bytes: int
    rewrites: int
    ping_seconds: float
    publish_seconds: float
    memory_bytes: int


def say(text: str) -> None:
    print(f"[bench-redis] {text}", flush=True)


def compose_redis() -> tuple[str, list[str]]:
    """The redis service's image and command as compose renders them."""
    env = {**os.environ, "WWWS_TOKEN_SECRET": "x" * 32, "DOCKER_GID": "0"}
    env["WWWS_REDIS_PASSWORD"] = PASSWORD
    if IMAGES_ENV.exists():
        for line in IMAGES_ENV.read_text().splitlines():
            name, _, value = line.partition("=")
            if name.startswith("WWWS_") and value:
                env.setdefault(name, value)
    rendered = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "compose.yaml"), "config", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    service = json.loads(rendered.stdout)["services"]["redis"]
    return str(service["image"]), [str(arg) for arg in service["command"]]


def wait_port(container: Any) -> int:
    for _ in range(100):
        container.reload()
        bindings = container.ports.get("6379/tcp")
        if bindings:
            return int(bindings[0]["HostPort"])
        time.sleep(0.1)
    raise RuntimeError("redis published no port")


def url_of(container: Any, command: list[str]) -> str:
    """As the services connect: as the ACL user `wwws` where the command defines it."""
    user = f"wwws:{PASSWORD}@" if "wwws" in command else ""
    return f"redis://{user}127.0.0.1:{wait_port(container)}/0"


async def fill(url: str, messages: int, rooms: int) -> None:
    backplane = RedisBackplane(url, history_size=1000, history_ttl=86400.0)
    text = "x" * 120  # a chat line of average length
    try:
        for start in range(0, messages, BATCH):
            await asyncio.gather(
                *(
                    backplane.broker.publish(
                        f"chat:room{n % rooms}",
                        orjson.dumps({"text": text, "user": f"user{n % 997}", "ts": n}),
                        idempotency_key=f"user{n % 997}/{n}",
                    )
                    for n in range(start, min(start + BATCH, messages))
                )
            )
            if start % 20_000 == 0:
                say(f"  published {start:,} of {messages:,}")
    finally:
        await backplane.close()


async def first_publish(url: str) -> None:
    backplane = RedisBackplane(url, history_size=1000, history_ttl=86400.0)
    try:
        await backplane.broker.publish("chat:after-restart", b'{"text":"back"}')
    finally:
        await backplane.close()


def measure(name: str, image: str, command: list[str], messages: int, rooms: int) -> Outcome:
    client = docker.from_env()
    volume = client.volumes.create(labels={"wwws.bench": "redis-recovery"})
    container = client.containers.run(
        image,
        command,
        detach=True,
        ports={"6379/tcp": ("127.0.0.1", None)},
        volumes={volume.name: {"bind": "/data", "mode": "rw"}},
        labels={"wwws.bench": "redis-recovery"},
    )
    try:
        url = url_of(container, command)
        direct = redis.Redis.from_url(url, socket_timeout=5)
        until_answers(direct)
        say(f"{name}: {' '.join(command[1:])}")
        asyncio.run(fill(url, messages, rooms))
        while direct.info("persistence")["aof_rewrite_in_progress"]:
            time.sleep(0.2)
        rewrites = int(direct.info("persistence").get("aof_rewrites", 0))
        memory = int(direct.info("memory")["used_memory"])
        size = container.exec_run(["sh", "-c", "du -sb /data | cut -f1"]).output
        aof_bytes = int(size.decode().strip() or 0)
        container.stop(timeout=10)
        started = time.monotonic()
        container.start()
        url = url_of(container, command)
        direct = redis.Redis.from_url(url, socket_timeout=5)
        until_answers(direct)
        ping = time.monotonic() - started
        asyncio.run(first_publish(url))
        publish = time.monotonic() - started
        mb = aof_bytes / 1e6
        say(f"{name}: data {mb:.1f} MB, PING after {ping:.2f}s, publish {publish:.2f}s")
        return Outcome(name, aof_bytes, rewrites, ping, publish, memory)
    finally:
        container.remove(force=True)
        volume.remove(force=True)
        client.close()


def until_answers(direct: redis.Redis, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            direct.ping()
            return
        except (redis.BusyLoadingError, redis.ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rooms", type=int, default=300)
    args = parser.parse_args()
    image, tuned = compose_redis()
    outcomes = [
        measure("earlier (--appendonly yes)", image, EARLIER, args.messages, args.rooms),
        measure("compose.yaml", image, tuned, args.messages, args.rooms),
    ]
    before, after = outcomes
    print()
    print("| settings | in memory | on disk | rewrites | PING after restart | first publish |")
    print("|---|---|---|---|---|---|")
    for o in outcomes:
        print(
            f"| {o.name} | {o.memory_bytes / 1e6:.1f} MB | {o.aof_bytes / 1e6:.1f} MB "
            f"| {o.rewrites} | {o.ping_seconds:.2f} s "
            f"| {o.publish_seconds:.2f} s |"
        )
    ratio = after.publish_seconds / before.publish_seconds if before.publish_seconds else 0
    print(f"\nrecovery with compose.yaml's settings ÷ earlier: {ratio:.2f}x")


if __name__ == "__main__":
    main()
