"""Calls of one Lua script made in the same loop iteration, sent to Redis as one call.

redis-py spends about 50 µs of the replica's CPU on every command (its pool, its
bookkeeping), far more than a presence join costs Redis itself. A burst of connections
(a reconnect storm, a busy minute) makes many joins and leaves in each loop iteration:
they go as one script call per iteration, at most ``limit`` entries each. The script
takes its entries' KEYS and ARGV one after the other and returns one result per entry.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.commands.core import AsyncScript

from .redis_connection import RedisConnection

__all__ = ["ScriptBatch"]


class ScriptBatch:
    def __init__(self, redis: RedisConnection, script: AsyncScript, limit: int) -> None:
        self._redis = redis
        self._script = script
        self._limit = limit
        self._pending: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, keys: list[str], args: list[Any]) -> Any:
        """The script's result for this one entry (BackplaneUnavailable as the script's)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._send_pending)
        self._pending.append((keys, args, future))
        return await future

    def _send_pending(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self._limit):
            task = asyncio.ensure_future(self._send(pending[start : start + self._limit]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, entries: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> None:
        keys = [key for entry_keys, _, _ in entries for key in entry_keys]
        args = [arg for _, entry_args, _ in entries for arg in entry_args]
        try:
            results = await self._redis.run(self._script, keys, args)
        except Exception as error:  # BackplaneUnavailable: every caller hears it
            for _, _, future in entries:
                if not future.done():
                    future.set_exception(error)
            return
        except BaseException:  # the replica stopping
            for _, _, future in entries:
                future.cancel()
            raise
        for (_, _, future), result in zip(entries, results, strict=True):
            if not future.done():  # its caller may have been cancelled meanwhile
                future.set_result(result)
