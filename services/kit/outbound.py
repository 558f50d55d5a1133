"""A connection's bounded, coalescing outbound queue: the one place that writes raw
WebSocket frames on the transport behind aiohttp.

Why raw: frames are queued as already-serialised bytes and written once per event-loop
iteration as one ``transport.write`` of several WebSocket frames: one syscall for many
publications, where aiohttp's ``send_str`` costs a call, a header and a drain per frame
(the measured fan-out speed, docs/benchmarks.md). A publication fanned out to many
connections is framed once (header + payload, :func:`wire`) and the same bytes object is
queued on each of them; and one callback per loop iteration flushes every queue written
to in it (:class:`_Flusher`), not one callback per connection.

The bound counts what is queued here plus what the transport still holds, so a client
that stops reading cannot grow the replica's memory past it; crossing it calls
``on_overflow`` (the connection closes with 4108).

Invariants that make sharing the transport with aiohttp's own writer safe (tested in
tests/unit/test_outbound.py and tests/contract/test_session.py):

- every ``transport.write`` here carries whole frames, written synchronously, and aiohttp
  writes its pongs and close frames the same way, so frames never interleave mid-frame;
- data frames are written only here (nothing calls ``ws.send_*``), so their order is this
  queue's order;
- the server's close frame is written here too (:meth:`Outbound.finish`), after every
  queued frame and as the last thing written: nothing follows it (RFC 6455 5.5.1).
  aiohttp's writer sends a close frame only in reply to a client that closed first.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable

__all__ = ["Outbound", "close_frame", "pong_frame", "text_frame", "wire"]

log = logging.getLogger(__name__)

# A control frame's payload is at most 125 bytes: the 2-byte code and the reason.
MAX_CLOSE_REASON_BYTES = 123


def text_frame(payload: bytes) -> bytes:
    """An unmasked, uncompressed, final text frame (RFC 6455 5.2): valid for any client,
    since server frames are never masked, so one encoding serves every subscriber."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


_last_payload: bytes | None = None
_last_wire = b""


def wire(payload: bytes) -> bytes:
    """``text_frame(payload)``, built once for a run of calls with the same payload object
    (a fan-out hands every subscriber the same bytes): the header is built and the payload
    copied once per publication, not once per connection."""
    global _last_payload, _last_wire
    if payload is not _last_payload:
        _last_wire = text_frame(payload)
        _last_payload = payload
    return _last_wire


class _Flusher:
    """Flushes, in one callback per loop iteration, every queue written to in it."""

    __slots__ = ("loop", "pending", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[Outbound] = []
        self.scheduled = False

    def add(self, outbound: Outbound) -> None:
        self.pending.append(outbound)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.run)

    def run(self) -> None:
        self.scheduled = False
        pending, self.pending = self.pending, []
        for outbound in pending:
            try:
                outbound.flush()
            except Exception:  # one broken transport must not leave the others unwritten
                log.exception("flushing a connection's queue failed")


_flusher: _Flusher | None = None


def _flusher_of(loop: asyncio.AbstractEventLoop) -> _Flusher:
    """The running loop's flusher (tests run one loop after another in one process)."""
    global _flusher
    if _flusher is None or _flusher.loop is not loop:
        _flusher = _Flusher(loop)
    return _flusher


def close_frame(code: int, reason: bytes = b"") -> bytes:
    """An unmasked close frame (RFC 6455 5.5.1); the reason is cut to fit a control frame."""
    payload = struct.pack("!H", code) + reason[:MAX_CLOSE_REASON_BYTES]
    return bytes((0x88, len(payload))) + payload


def pong_frame(payload: bytes) -> bytes:
    """An unmasked pong echoing a ping's payload (at most 125 bytes, RFC 6455 5.5.3)."""
    return bytes((0x8A, len(payload[:125]))) + payload[:125]


def _nothing() -> None:
    """The overflow callback of a queue whose connection's session is over."""


class Outbound:
    __slots__ = (
        "_flush_scheduled",
        "_frames",
        "_max_bytes",
        "_on_overflow",
        "_queued",
        "_transport",
        "closed",
        "finished",
        "held",
        "peak_bytes",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        max_bytes: int,
        on_overflow: Callable[[], None],
    ) -> None:
        self._transport = transport
        self._max_bytes = max_bytes
        self._on_overflow = on_overflow
        self._frames: list[bytes] = []  # whole WebSocket frames
        self._queued = 0
        self._flush_scheduled = False
        self.closed = False
        self.finished = False  # the close frame was written
        self.peak_bytes = 0  # the most this connection ever held (queue + transport)
        self.held = False  # queue but do not write (until the connection is set up)

    @property
    def buffered_bytes(self) -> int:
        return self._queued + self._transport.get_write_buffer_size()

    def put(self, payload: bytes) -> bool:
        """Queue a text frame of ``payload`` (JSON); False when the connection is closed
        or this frame overflowed its bound."""
        if self.closed:
            return False
        frame = wire(payload)
        buffered = self._queued + self._transport.get_write_buffer_size() + len(frame)
        if buffered > self._max_bytes:
            self.close()
            self._on_overflow()
            return False
        self._frames.append(frame)
        self._queued += len(frame)
        if buffered > self.peak_bytes:
            self.peak_bytes = buffered
        if not self._flush_scheduled:
            self._flush_scheduled = True
            _flusher_of(asyncio.get_running_loop()).add(self)
        return True

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._frames or self.held:
            return
        frames, self._frames, self._queued = self._frames, [], 0
        if self.closed or self._transport.is_closing():
            return
        self._transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def write_control(self, frame: bytes) -> None:
        """A ping or a pong, written at once, whole, after what is queued (so that a
        `heartbeat` announcement reaches the client before the ping it announces). Never
        after the close frame."""
        if self.closed or self._transport.is_closing():
            return
        if self._frames and not self.held:
            self.flush()
        self._transport.write(frame)

    def release(self) -> None:
        """Start writing what was queued while held."""
        self.held = False
        self.flush()

    def forget_overflow(self) -> None:
        """Call nothing on a later overflow (the owner is gone; see Connection.end)."""
        self._on_overflow = _nothing

    def close(self) -> None:
        """Stop accepting frames and drop what was not written."""
        self.closed = True
        self._frames.clear()
        self._queued = 0

    def finish(self, code: int, reason: bytes) -> bool:
        """Write what is queued and then a close frame, in one write, and stop. Frames still
        held are dropped (the connection was never set up), as is everything after an
        overflow. False when the close frame was written already."""
        if self.finished:
            return False
        self.finished = True
        frames = [] if self.held else self._frames
        self._frames = []  # close() empties the queue: keep what is written below
        self.close()
        if not self._transport.is_closing():
            self._transport.write(b"".join([*frames, close_frame(code, reason)]))
        return True
