"""The stack's Redis refuses anyone without the services' password, never evicts stored
messages, and every container runs with memory and process limits."""

from __future__ import annotations

from stack import Stack

LIMITED = ("traefik", "chat", "ticker", "ticker-feed", "telephony", "admin", "redis", "prometheus")


def redis_cli(stack: Stack, *args: str) -> str:
    [redis] = stack.containers("redis")
    result = redis.exec_run(["redis-cli", "--no-auth-warning", *args])
    return str(result.output.decode(errors="replace").strip())


def test_redis_without_the_password_is_refused(stack: Stack):
    assert "NOAUTH" in redis_cli(stack, "ping")
    assert "WRONGPASS" in redis_cli(stack, "--user", "wwws", "--pass", "guess", "ping")
    assert "WRONGPASS" in redis_cli(stack, "--user", "default", "--pass", "guess", "ping")
    auth = ("--user", "wwws", "--pass", stack.redis_password)
    assert redis_cli(stack, *auth, "ping") == "PONG"
    assert redis_cli(stack, *auth, "config", "get", "maxmemory-policy").split() == [
        "maxmemory-policy",
        "noeviction",
    ]
    assert redis_cli(stack, *auth, "config", "get", "maxmemory").split()[1] == str(512 * 2**20)


def test_every_container_has_memory_and_process_limits(stack: Stack):
    for service in LIMITED:
        for container in stack.containers(service):
            host = container.attrs["HostConfig"]
            assert host["Memory"] > 0, f"{container.name}: no memory limit"
            assert host["PidsLimit"] and host["PidsLimit"] > 0, f"{container.name}: no pids limit"
