"""One client connection: who it is, what it subscribed to, and how frames reach it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time

import orjson
from aiohttp import web

from .backplane import Publication
from .hub import SubscribeResult
from .metrics import Metrics
from .outbound import Outbound
from .protocol import CloseCode, subscribed_frame
from .ratelimit import FloodGuard

__all__ = ["Connection"]

log = logging.getLogger(__name__)


class Connection:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        user: str,
        metrics: Metrics,
        max_queue_bytes: int,
    ) -> None:
        self.id = secrets.token_hex(6)
        self.user = user
        self.ws = ws
        self.subscriptions: set[str] = set()
        self.close_code: int | None = None
        self._metrics = metrics
        self._sent_msg = metrics.messages_sent.labels(metrics.service, "msg")
        self._outbound = Outbound(transport, max_queue_bytes, self._slow_consumer)
        self._closing: asyncio.Task[None] | None = None
        # created on the first `pub` when the service limits publishing
        self.publish_guard: FloodGuard | None = None

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
            self._metrics.messages_sent.labels(self._metrics.service, op).inc()

    # -- hub.Subscriber -------------------------------------------------------------
    def deliver(self, channel: str, publication: Publication, frame: bytes) -> None:
        if self._outbound.put(frame):
            self._sent_msg.inc()

    def resubscribed(self, channel: str, result: SubscribeResult) -> None:
        frame = subscribed_frame(
            None, channel, result.epoch, result.offset, result.recovered, result.publications
        )
        self.send(frame, "subscribed")

    # -- closing --------------------------------------------------------------------
    def _slow_consumer(self) -> None:
        self._metrics.slow_consumer_disconnects.inc()
        log.info(
            "slow consumer closed",
            extra={"event": "slow_consumer", "conn": self.id, "user": self.user},
        )
        self.close_soon(CloseCode.SLOW_CONSUMER, "outbound queue full")

    def close_soon(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self.close(code, reason))

    async def close(self, code: int, reason: str) -> None:
        """Flush what is queued (unless the queue overflowed), then close with ``code``."""
        self._outbound.release()
        self._outbound.close()
        if self.close_code is None:
            self.close_code = code
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=reason.encode()[:120])


def publication_age(publication: Publication) -> float | None:
    """Seconds since the publication's ``ts`` (ms since the epoch), when it has one."""
    try:
        ts = orjson.loads(publication.data).get("ts")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return max(0.0, time.time() - ts / 1000.0)
    return None
