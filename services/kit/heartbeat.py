"""The replica's heartbeat: WebSocket pings at an interval the replica chooses from its own
load (heartbeat_policy), spread over the interval, and the close of connections whose
client stopped answering.

Why not aiohttp's ``heartbeat=``: it pings every connection on one fixed period from a
timer of its own (a timer handle per connection), cannot change the period of an open
connection, and closes without a close frame. Here one task walks a timing wheel of
0.5 s slots:

- a new connection's first ping lands at a random point of the interval (a burst of
  connects does not become a burst of pings), then every ``interval`` after that, so each
  connection keeps its own phase and the pings of a replica are spread evenly;
- a ping is one prebuilt 2-byte frame written on the connection's transport right after
  what its outbound queue holds (no task, no timer), and the pings of a slot are counted
  with one metric increment;
- any frame from the client (a pong, or anything else) answers it; a connection whose
  previous ping is still unanswered when the next is due has missed it for a whole
  interval and is closed with **4110** (reconnect with backoff, resume): a client that
  died is found within 2 intervals + one slot;
- a closed connection leaves its slot at once (``remove``): the wheel holds each
  connection until its next ping, up to a whole interval away, and a connection kept
  there after its close kept its request, reader and buffers alive that long (under
  connection churn, thousands of dead connections for the cyclic GC to walk);
- when the interval changes, each connection is told with ``{"op":"heartbeat",
  "interval":H}`` just before its next ping: the announcements are spread over the
  interval like the pings, never thousands of frames in one loop iteration.

Every ``ADJUST_SECONDS`` the load (connections held, event-loop lag) goes through the
policy; the metrics show the interval, the pings sent and the clients closed for missing
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable

from .connection import Connection
from .heartbeat_policy import HeartbeatPolicy, IntervalState, next_interval
from .metrics import Metrics
from .protocol import CloseCode, encode
from .replica import ReplicaState

__all__ = ["PING_FRAME", "Heartbeat"]

log = logging.getLogger(__name__)

#: an unmasked ping frame with no payload (RFC 6455 5.5.2)
PING_FRAME = b"\x89\x00"
SLOT_SECONDS = 0.5
ADJUST_SECONDS = 5.0


class Heartbeat:
    def __init__(
        self,
        policy: HeartbeatPolicy,
        replica: ReplicaState,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self.policy = policy
        self._replica = replica
        self._metrics = metrics
        self._clock = clock
        self._state = IntervalState(policy.floor, policy.floor)
        self._wheel: dict[int, set[Connection]] = {}
        self._last_slot = int(clock() / SLOT_SECONDS)
        self._next_adjust = clock() + ADJUST_SECONDS
        self._announcement = self._frame()
        metrics.heartbeat_interval.set(self.interval)

    @property
    def interval(self) -> float:
        return self._state.announced

    def _frame(self) -> bytes:
        return encode({"op": "heartbeat", "interval": self.interval})

    def add(self, conn: Connection) -> None:
        """Start pinging ``conn`` (told the interval in its ``hello``)."""
        conn.heartbeat_told = self.interval
        self._schedule(conn, self._clock() + random.uniform(0.0, self.interval))

    def _schedule(self, conn: Connection, due: float) -> None:
        # never into a slot the wheel has passed already (it would wait forever)
        slot = max(int(due / SLOT_SECONDS), self._last_slot + 1)
        self._wheel.setdefault(slot, set()).add(conn)
        conn.heartbeat_slot = slot

    def remove(self, conn: Connection) -> None:
        """Stop pinging ``conn`` (closed): it leaves its slot now, not when the slot comes."""
        slot = self._wheel.get(conn.heartbeat_slot)
        if slot is not None:
            slot.discard(conn)

    # -- the work of one slot ---------------------------------------------------------
    def tick(self) -> None:
        now = self._clock()
        if now >= self._next_adjust:
            self._next_adjust = now + ADJUST_SECONDS
            self.adjust(len(self._replica.connections), self._replica.loop_lag)
        slot = int(now / SLOT_SECONDS)
        pings = 0
        for passed in range(self._last_slot + 1, slot + 1):
            for conn in self._wheel.pop(passed, ()):
                pings += self._beat(conn, now)
        self._last_slot = max(self._last_slot, slot)
        if pings:
            self._metrics.heartbeat_pings.inc(pings)

    def adjust(self, connections: int, lag: float) -> None:
        before = self.interval
        self._state = next_interval(self.policy, self._state, connections, lag)
        if self.interval != before:
            self._announcement = self._frame()
            self._metrics.heartbeat_interval.set(self.interval)
            log.info(
                "heartbeat interval %ss -> %ss (%d connections, loop lag %.0f ms)",
                before,
                self.interval,
                connections,
                lag * 1000,
                extra={"event": "heartbeat_interval", "interval": self.interval},
            )

    def _beat(self, conn: Connection, now: float) -> bool:
        """Ping ``conn`` (True), or close it when its last ping went unanswered."""
        if conn.closing:
            return False  # closed: it leaves the wheel
        if conn.ping_outstanding:
            self._metrics.heartbeat_timeouts.inc()
            log.info(
                "no pong: closed",
                extra={"event": "heartbeat_timeout", "conn": conn.id, "user": conn.user},
            )
            conn.close(CloseCode.HEARTBEAT_TIMEOUT, "no pong within the heartbeat interval")
            return False
        if conn.heartbeat_told != self.interval:
            conn.send(self._announcement, "heartbeat")
            conn.heartbeat_told = self.interval
        conn.ping_outstanding = True
        conn.send_control(PING_FRAME)
        self._schedule(conn, now + self.interval)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(SLOT_SECONDS)
            self.tick()

    async def lifecycle(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self.run(), name="heartbeat")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
