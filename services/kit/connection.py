"""One client connection: who it is, what it subscribed to, and how frames reach it."""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time

from aiohttp import web

from .backplane import Publication
from .hub import SubscribeResult
from .metrics import Metrics
from .outbound import Outbound
from .protocol import CloseCode, subscribed_frame
from .ratelimit import FloodGuard

__all__ = ["Connection", "Ended"]

log = logging.getLogger(__name__)


def _forget_close_tracebacks(ws: web.WebSocketResponse) -> None:
    """Drop the traceback of the error aiohttp keeps on a socket the client dropped.

    Writing the close frame to a socket already gone leaves ``ClientConnectionResetError``
    on the response (``ws.exception()``, raised while handling the reader's
    ``EofStream``). Their tracebacks hold ``receive()``'s and ``close()``'s frames, whose
    ``self`` is the response that holds the error: a cycle that kept every dropped
    socket's objects (~56) for the cyclic collector, as the outbound queue's did for a
    clean close (docs/benchmarks.md).
    """
    errors = [ws.exception()]
    seen: set[int] = set()
    while errors:
        error = errors.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        error.__traceback__ = None
        errors += (error.__cause__, error.__context__)


class Ended:
    """Set once, waited for rarely (the drain, tests): asyncio.Event's deque of waiters
    alone is 760 bytes, per connection; this holds a future only while someone waits."""

    __slots__ = ("_done", "_waiter")

    def __init__(self) -> None:
        self._done = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._done

    def set(self) -> None:
        self._done = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        if self._done:
            return
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._waiter)  # one waiter's cancellation is not the others'


class Connection:
    # slots: a replica holds tens of thousands of these; no per-instance dict
    __slots__ = (
        "_abort",
        "_close_timeout",
        "_metrics",
        "_outbound",
        "_transport",
        "close_code",
        "ended",
        "expires_at",
        "heartbeat_slot",
        "heartbeat_told",
        "id",
        "issued_at",
        "ping_outstanding",
        "publish_guard",
        "subscriptions",
        "user",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        user: str,
        metrics: Metrics,
        max_queue_bytes: int,
        close_timeout: float = 2.0,
    ) -> None:
        self.id = secrets.token_hex(6)
        self.user = user
        self.ws = ws
        #: the channels it is subscribed to, in order; a tuple, not a set: a connection
        #: holds a few (at most MAX_SUBSCRIPTIONS), and a set costs 216 bytes even empty
        self.subscriptions: tuple[str, ...] = ()
        #: the code of the close frame the server sent (None: it has not closed)
        self.close_code: int | None = None
        #: set once the session ended and its bookkeeping is done
        self.ended = Ended()
        self._metrics = metrics
        self._transport = transport
        self._outbound = Outbound(transport, max_queue_bytes, self._slow_consumer)
        self._close_timeout = close_timeout
        self._abort: asyncio.TimerHandle | None = None
        # created on the first `pub` when the service limits publishing
        self.publish_guard: FloodGuard | None = None
        #: the token's ``exp`` and ``iat`` (seconds since the epoch), moved by a refresh
        self.expires_at = math.inf
        self.issued_at: float | None = None
        #: a ping was sent and no frame came back since (heartbeat.py)
        self.ping_outstanding = False
        #: the heartbeat interval this client was last told (hello or `heartbeat`)
        self.heartbeat_told = 0.0
        #: the heartbeat wheel's slot this connection waits in (-1: none yet)
        self.heartbeat_slot = -1

    def add_subscription(self, channel: str) -> None:
        self.subscriptions = (*self.subscriptions, channel)

    def drop_subscription(self, channel: str) -> None:
        self.subscriptions = tuple(c for c in self.subscriptions if c != channel)

    @property
    def closing(self) -> bool:
        """On its way out: the server closed it, its socket is gone (a client that dropped
        off, noticed by the loop before the session's cleanup ends), or the session ended."""
        return self.close_code is not None or self._transport.is_closing() or self.ended.is_set()

    @property
    def outbound_peak_bytes(self) -> int:
        return self._outbound.peak_bytes

    def hold(self) -> None:
        """Queue frames without writing them, until :meth:`release`."""
        self._outbound.held = True

    def release(self) -> None:
        self._outbound.release()

    def send(self, frame: bytes, op: str) -> None:
        if self._outbound.put(frame):
            self._metrics.sent(op).inc()

    def send_control(self, frame: bytes) -> None:
        """A ping or pong frame (prebuilt, whole), written at once."""
        self._outbound.write_control(frame)

    # -- hub.Subscriber -------------------------------------------------------------
    def deliver(self, channel: str, publication: Publication, frame: bytes) -> bool:
        # counted once per fan-out by the hub (a Prometheus increment per frame costs a
        # lock: a measurable share of fan-out), from this True
        return self._outbound.put(frame)

    def resubscribed(self, channel: str, result: SubscribeResult) -> None:
        frame = subscribed_frame(
            None, channel, result.epoch, result.offset, result.recovered, result.publications
        )
        self.send(frame, "subscribed")

    # -- closing --------------------------------------------------------------------
    def end(self) -> None:
        """The session is over and its bookkeeping done: set :attr:`ended` and cut the
        outbound queue's reference back to this connection. That cycle (connection ->
        queue -> overflow callback -> connection) was the one a closed connection left
        behind: through it, the connection, aiohttp's request, handler and writer and the
        socket's objects (~40 per connection) waited for a full run of the cyclic
        collector, whose every run then walked them all (docs/benchmarks.md). Without it
        they are freed as the handler returns."""
        self._outbound.forget_overflow()
        _forget_close_tracebacks(self.ws)
        self.ended.set()

    def _slow_consumer(self) -> None:
        self._metrics.slow_consumer_disconnects.inc()
        log.info(
            "slow consumer closed",
            extra={"event": "slow_consumer", "conn": self.id, "user": self.user},
        )
        self.close(CloseCode.SLOW_CONSUMER, "outbound queue full")

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake: write what is queued (unless the queue overflowed)
        and a close frame with ``code``. The session ends when the client answers with its
        own close frame, which completes the handshake, or after ``close_timeout`` when
        the transport is dropped. Safe to call from any task, any number of times."""
        if self.close_code is not None:
            return
        self.close_code = code
        self._outbound.finish(code, reason.encode())
        loop = asyncio.get_running_loop()
        self._abort = loop.call_later(self._close_timeout, self._transport.close)

    async def close_and_wait(self, code: int, reason: str) -> None:
        """:meth:`close`, then wait until the session has ended (at most ``close_timeout``
        and its bookkeeping). For other tasks: the drain, tests; never the session itself."""
        self.close(code, reason)
        await self.ended.wait()

    def drop(self) -> None:
        """End the TCP connection now (the closing handshake is over or abandoned)."""
        if self._abort is not None:
            self._abort.cancel()
        self._transport.close()


def publication_age(publication: Publication) -> float | None:
    """Seconds since the publication's ``ts`` (ms since the epoch), when it has one.

    Found by a byte search, not by decoding the publication again (once per publication,
    for a metric): ``"ts":`` can only be a key, since a quote inside a JSON string is
    always escaped. The last one wins: the server stamps ``ts`` last in chat's data."""
    data = publication.data
    at = data.rfind(b'"ts":')
    if at < 0:
        return None
    end = at + 5
    while end < len(data) and data[end] not in b",}":
        end += 1
    try:
        ts = float(data[at + 5 : end])
    except ValueError:
        return None
    if ts != ts or ts in (math.inf, -math.inf):  # NaN or infinite: not a time
        return None
    return max(0.0, time.time() - ts / 1000.0)
