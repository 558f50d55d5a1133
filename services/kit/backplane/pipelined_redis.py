"""Redis commands pipelined on one connection: the client of the hot path.

redis-py spends ~50-80 µs of CPU per command here (its pool takes a condition, a lock
and a timeout and dispatches per command); a replica accepting connections makes several
per handshake. This client writes the commands made in one loop iteration, by any
number of coroutines, to one socket in one write and matches replies in order (Redis
answers a connection's commands in the order sent): a command costs an encode, a future
and hiredis's parse, ~6-10 µs (docs/benchmarks.md).

It carries single commands and scripts (``EVALSHA``, ``EVAL`` again after a flush). The
pub/sub feed, pipelines and ``WAIT`` stay on redis-py's pool. A connection is opened on
first use and again after it is lost: every command in flight then fails with
:class:`BackplaneUnavailable` (never a reply meant for another), as does a command while
Redis cannot be reached. A connection with commands waiting and no reply for
``reply_timeout`` seconds is closed (a Redis whose machine vanished sends nothing).
"""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import hiredis

from .broker import BackplaneUnavailable

__all__ = ["PipelinedRedis"]

Address = tuple[str, int]
Arg = bytes | str | int | float | memoryview


class _ReplyProtocol(asyncio.Protocol):
    """One connection: commands out in order, replies matched to them in order."""

    def __init__(self, reply_timeout: float) -> None:
        self._reader = hiredis.Reader()
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._reply_timeout = reply_timeout
        self._replies = 0  # replies matched so far: the watchdog's sign of progress
        self._replies_at_watch = 0
        self._watchdog: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        # commands made in one loop iteration leave in one write (one syscall, one packet)
        self._unsent: list[bytes] = []
        self.closed = self._loop.create_future()

    @property
    def open(self) -> bool:
        return not self.closed.done()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, args: Sequence[Arg]) -> asyncio.Future[Any]:
        if self._transport is None or not self.open:
            raise BackplaneUnavailable("the connection to Redis is closed")
        reply = self._loop.create_future()
        if not self._unsent:
            self._loop.call_soon(self._flush)
        self._unsent.append(hiredis.pack_command(tuple(args)))  # type: ignore[arg-type]
        self._waiting.append(reply)
        if self._watchdog is None:
            self._watch()
        return reply

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        if self._transport is not None and self.open:
            self._transport.write(b"".join(unsent))

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError:
                self.close()  # not Redis speaking: nothing after this can be matched
                return
            if reply is False:
                return
            self._replies += 1
            waiter = self._waiting.popleft()
            if not waiter.done():  # its caller may have been cancelled: the reply is dropped
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        lost = BackplaneUnavailable(f"the connection to Redis was lost ({exc or 'closed'})")
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(lost)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()  # connection_lost fails what is still waiting

    def _watch(self) -> None:
        self._replies_at_watch = self._replies
        self._watchdog = self._loop.call_later(self._reply_timeout, self._check_progress)

    def _check_progress(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        if self._replies == self._replies_at_watch:
            self.close()  # nothing came back for reply_timeout while commands waited
            return
        self._watch()


class PipelinedRedis:
    """``address`` names the server to connect to, asked again on every new connection
    (Sentinel: the current primary)."""

    def __init__(
        self,
        address: Callable[[], Awaitable[Address]],
        *,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        connect_timeout: float = 2.0,
        reply_timeout: float = 5.0,
        socket_options: dict[int, int] | None = None,
    ) -> None:
        self._address = address
        self._hello: list[tuple[Arg, ...]] = []
        if password:
            self._hello.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            self._hello.append(("SELECT", db))
        self._connect_timeout = connect_timeout
        self._reply_timeout = reply_timeout
        self._socket_options = socket_options or {}
        self._protocol: _ReplyProtocol | None = None
        self._connecting: asyncio.Task[_ReplyProtocol] | None = None
        self._closed = False
        #: connections opened so far (the first included)
        self.connections_opened = 0

    async def execute(self, *args: Arg) -> Any:
        """One command's reply; an error reply or a lost connection raises
        :class:`BackplaneUnavailable`."""
        reply = await self._send(args)
        if isinstance(reply, hiredis.ReplyError):
            raise self._failure(reply)
        return reply

    async def run_script(
        self, sha: str, source: Arg, keys: Sequence[Arg], args: Sequence[Arg]
    ) -> Any:
        """A Lua script by its SHA1, with its text when Redis does not hold it."""
        head: tuple[Arg, ...] = (len(keys), *keys, *args)
        reply = await self._send(("EVALSHA", sha, *head))
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            reply = await self._send(("EVAL", source, *head))  # which also loads it
        if isinstance(reply, hiredis.ReplyError):
            raise self._failure(reply)
        return reply

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._protocol is not None:
            self._protocol.close()
            await self._protocol.closed

    def _failure(self, reply: hiredis.ReplyError) -> BackplaneUnavailable:
        text = str(reply)
        if text.startswith(("READONLY", "MASTERDOWN", "LOADING")) and self._protocol is not None:
            # a demoted primary or one not ready: the next connection asks where to go
            self._protocol.close()
        return BackplaneUnavailable(text)

    async def _send(self, args: Sequence[Arg]) -> Any:
        protocol = self._protocol
        if protocol is None or not protocol.open:
            protocol = await self._connection()
        return await protocol.send(args)

    async def _connection(self) -> _ReplyProtocol:
        if self._closed:
            raise BackplaneUnavailable("the Redis client is closed")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._opened)
        # shielded: one caller's cancellation does not abort the others' connection
        return await asyncio.shield(self._connecting)

    def _opened(self, task: asyncio.Task[_ReplyProtocol]) -> None:
        self._connecting = None
        if not task.cancelled() and task.exception() is None:
            self._protocol = task.result()

    async def _open(self) -> _ReplyProtocol:
        loop = asyncio.get_running_loop()
        try:
            host, port = await asyncio.wait_for(self._address(), self._connect_timeout)
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _ReplyProtocol(self._reply_timeout), host, port),
                self._connect_timeout,
            )
        except (OSError, TimeoutError, BackplaneUnavailable) as exc:
            raise BackplaneUnavailable(f"cannot reach Redis: {exc or type(exc).__name__}") from exc
        except Exception as exc:  # Sentinel's own errors (no primary known, ...)
            raise BackplaneUnavailable(f"cannot find Redis: {exc}") from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for option, value in self._socket_options.items():
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
        try:
            for command in self._hello:
                reply = await asyncio.wait_for(protocol.send(command), self._connect_timeout)
                if isinstance(reply, hiredis.ReplyError):
                    raise BackplaneUnavailable(f"Redis refused {command[0]!s}: {reply}")
        except TimeoutError:
            protocol.close()
            raise BackplaneUnavailable("Redis did not answer the connection's setup") from None
        except BaseException:
            protocol.close()
            raise
        self.connections_opened += 1
        return protocol
