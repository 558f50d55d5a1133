"""One replica's Redis connection pool, its Lua scripts, and error translation.

Shared by the Redis broker and presence, and by service-specific stores (telephony's
call records) through :attr:`RedisBackplane.connection`. Every Redis or socket error
becomes :class:`BackplaneUnavailable`.

URLs: ``redis://[user:password@]host:port/db`` (one Redis), or
``redis+sentinel://[user:password@]sentinel1:26379,sentinel2:26379/<master name>/db``:
the primary is whichever the Sentinels name, asked again on every new connection, so
after a failover the pool reconnects to the promoted replica on its own. Both take
``?ack_replicas=N&ack_timeout_ms=T``: a publication is acknowledged only once N replicas
hold it (Redis ``WAIT``), see :class:`DurableAck`. Sentinels are reached without a
password (keep them on the backplane's internal network); the user and password are the
data nodes'.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from .broker import BackplaneUnavailable
from .pipelined_redis import Address, PipelinedRedis

__all__ = ["MAX_CONNECTIONS", "POOL_TIMEOUT_SECONDS", "DurableAck", "RedisConnection"]

MAX_CONNECTIONS = 64  # per replica; commands are short, so a few dozen carry thousands
POOL_TIMEOUT_SECONDS = 5.0  # then the client gets `unavailable`

T = TypeVar("T")


@functools.cache
def _lua_source(package: str, names: tuple[str, ...]) -> str:
    """The concatenated text of Lua files in ``package``'s ``lua/`` folder (read once)."""
    folder = resources.files(package).joinpath("lua")
    return "\n".join(folder.joinpath(name).read_text(encoding="utf-8") for name in names)


SENTINEL_SCHEME = "redis+sentinel"
# A Redis whose machine vanished sends no FIN and no RST: a connection that only waits
# (the pub/sub one, idle pool ones) would hear nothing for the kernel's 2 hours, or
# redis-py's default 30 s idle + 3 x 5 s probes, while publications go to the promoted
# replica unseen. Probes after 2 s idle, every 1 s, and at most 5 s unanswered
# (TCP_USER_TIMEOUT, also for data sent and never acknowledged) close it within ~5 s; a
# live Redis answers probes from its kernel, so they cost nothing there.
_KEEPALIVE: dict[int, int] = {
    socket.TCP_KEEPIDLE: 2,
    socket.TCP_KEEPINTVL: 1,
    socket.TCP_KEEPCNT: 3,
    socket.TCP_USER_TIMEOUT: 5000,
}
_CONNECTION_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "socket_keepalive": True,
    "socket_keepalive_options": _KEEPALIVE,
    "health_check_interval": 10,
}


@dataclass(frozen=True)
class DurableAck:
    """Acknowledge a publication only once ``replicas`` Redis replicas have it, waiting at
    most ``timeout_ms`` (then the publisher hears ``unavailable``, never an ack). 0: the
    primary's word is enough (a single Redis)."""

    replicas: int = 0
    timeout_ms: int = 1000


class RedisConnection:
    """Single commands and scripts (:meth:`execute`, :meth:`run`) go pipelined on one
    connection (:class:`PipelinedRedis`) for ``redis://`` and ``redis+sentinel://`` URLs,
    through redis-py's pool for the others (``rediss://``, ``unix://``: its TLS and socket
    options) or with ``pipelined=False``; pub/sub, pipelines and ``WAIT`` use
    :attr:`client`, redis-py's pool."""

    def __init__(self, url: str, *, pipelined: bool = True) -> None:
        url, self.durable_ack = _split_ack_options(url)
        self._sentinel: Sentinel | None = None
        self.pipelined: PipelinedRedis | None = None
        if urlsplit(url).scheme == SENTINEL_SCHEME:
            self._sentinel, master, options = _sentinel_of(url)
            self.client: aioredis.Redis = self._sentinel.master_for(
                master, max_connections=MAX_CONNECTIONS, **options, **_CONNECTION_OPTIONS
            )
            if pipelined:
                sentinel = self._sentinel

                async def primary() -> Address:
                    host, port = await sentinel.discover_master(master)
                    return str(host), int(port)

                self.pipelined = _pipelined(primary, options)
            return
        if pipelined and urlsplit(url).scheme == "redis":
            parsed: dict[str, Any] = dict(parse_url(url))
            address = (str(parsed.get("host", "localhost")), int(parsed.get("port", 6379)))

            async def fixed() -> Address:
                return address

            self.pipelined = _pipelined(fixed, parsed)
        # A blocking pool: a burst of subscribes (a drained replica's clients all coming
        # back) waits for a free connection instead of failing with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_TIMEOUT_SECONDS,
            **_CONNECTION_OPTIONS,
        )
        self.client = aioredis.Redis.from_pool(pool)  # closes the pool too

    def script(self, package: str, *names: str) -> AsyncScript:
        """A script made of ``package``'s Lua files ``names`` (shared preludes first);
        redis-py sends it once per server (EVALSHA, loading it again after a flush)."""
        return self.client.register_script(_lua_source(package, names))

    async def run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        if self.pipelined is None:
            return await self.call(script(keys=keys, args=args))
        return await self.pipelined.run_script(script.sha, script.script, keys, args)

    async def execute(self, *args: Any) -> Any:
        """One command, e.g. ``execute("GET", key)``: its reply as Redis sends it."""
        if self.pipelined is None:
            return await self.call(self.client.execute_command(*args))  # type: ignore[no-untyped-call]
        return await self.pipelined.execute(*args)

    async def call(self, command: Awaitable[T]) -> T:
        try:
            return await command
        except (RedisError, OSError) as exc:
            raise BackplaneUnavailable(str(exc)) from exc
        except RuntimeError as exc:
            # uvloop refuses a write on a transport already closed ("unable to perform
            # operation on <TCPTransport closed=True>"), which redis-py lets through: a
            # Redis gone without a word (a node lost). redis-py has dropped the connection;
            # the client hears `unavailable` and retries, not an internal error (1011).
            raise BackplaneUnavailable(f"the connection to Redis is lost ({exc})") from exc

    async def ping(self) -> None:
        await self.execute("PING")

    async def close(self) -> None:
        if self.pipelined is not None:
            await self.pipelined.close()
        await self.client.aclose()
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                await sentinel.aclose()


def _pipelined(
    address: Callable[[], Awaitable[Address]], options: dict[str, Any]
) -> PipelinedRedis:
    return PipelinedRedis(
        address,
        username=options.get("username"),
        password=options.get("password"),
        db=int(options.get("db") or 0),
        connect_timeout=_CONNECTION_OPTIONS["socket_connect_timeout"],
        reply_timeout=_CONNECTION_OPTIONS["socket_timeout"],
        socket_options=_KEEPALIVE,
    )


def _split_ack_options(url: str) -> tuple[str, DurableAck]:
    """The URL without ``ack_replicas`` / ``ack_timeout_ms``, and what they ask for."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    try:
        ack = DurableAck(int(query.pop("ack_replicas", 0)), int(query.pop("ack_timeout_ms", 1000)))
    except ValueError:
        raise ValueError("ack_replicas and ack_timeout_ms must be integers") from None
    if ack.replicas < 0 or ack.timeout_ms <= 0:
        raise ValueError("ack_replicas must be >= 0 and ack_timeout_ms > 0")
    return urlunsplit(parts._replace(query=urlencode(query))), ack


def _sentinel_of(url: str) -> tuple[Sentinel, str, dict[str, Any]]:
    """``redis+sentinel://[user:pw@]h1:p1,h2:p2/master[/db]`` -> Sentinel, master, options."""
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    user, _, password = credentials.partition(":")
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":") if ":" in host else (host, "", "26379")
        sentinels.append((name, int(port or 26379)))
    path = [segment for segment in parts.path.split("/") if segment]
    if not path or not sentinels:
        raise ValueError(f"{SENTINEL_SCHEME}:// needs sentinels and a master name: {url!r}")
    options: dict[str, Any] = {"db": int(path[1]) if len(path) > 1 else 0}
    if user:
        options["username"] = unquote(user)
    if password:
        options["password"] = unquote(password)
    sentinel = Sentinel(sentinels, sentinel_kwargs=dict(_CONNECTION_OPTIONS))  # type: ignore[no-untyped-call]
    return sentinel, path[0], options
