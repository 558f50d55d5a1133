"""One replica's Redis connection pool, its Lua scripts, and error translation.

Shared by the Redis broker and presence, and by service-specific stores (telephony's
call records) through :attr:`RedisBackplane.connection`. Every Redis or socket error
becomes :class:`BackplaneUnavailable`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable
from importlib import resources
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from .broker import BackplaneUnavailable

__all__ = ["MAX_CONNECTIONS", "POOL_TIMEOUT_SECONDS", "RedisConnection"]

MAX_CONNECTIONS = 64  # per replica; commands are short, so a few dozen carry thousands
POOL_TIMEOUT_SECONDS = 5.0  # then the client gets `unavailable`

T = TypeVar("T")


@functools.cache
def _lua_source(package: str, names: tuple[str, ...]) -> str:
    """The concatenated text of Lua files in ``package``'s ``lua/`` folder (read once)."""
    folder = resources.files(package).joinpath("lua")
    return "\n".join(folder.joinpath(name).read_text(encoding="utf-8") for name in names)


class RedisConnection:
    def __init__(self, url: str) -> None:
        # A blocking pool: a burst of subscribes (a drained replica's clients all coming
        # back) waits for a free connection instead of failing with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_TIMEOUT_SECONDS,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=10,
        )
        self.client: aioredis.Redis = aioredis.Redis.from_pool(pool)  # closes the pool too

    def script(self, package: str, *names: str) -> AsyncScript:
        """A script made of ``package``'s Lua files ``names`` (shared preludes first);
        redis-py sends it once per server (EVALSHA, loading it again after a flush)."""
        return self.client.register_script(_lua_source(package, names))

    async def run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        return await self.call(script(keys=keys, args=args))

    async def call(self, command: Awaitable[T]) -> T:
        try:
            return await command
        except (RedisError, OSError) as exc:
            raise BackplaneUnavailable(str(exc)) from exc

    async def ping(self) -> None:
        await self.call(self.client.ping())

    async def close(self) -> None:
        await self.client.aclose()
