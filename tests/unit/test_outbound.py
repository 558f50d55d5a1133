"""The outbound queue: the one place raw frames are written on the transport."""

from __future__ import annotations

import asyncio
import struct
import time

from services.kit.backplane import Publication
from services.kit.connection import Ended, publication_age
from services.kit.outbound import Outbound, close_frame, text_frame, wire


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.buffered = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing


def outbound(transport: FakeTransport, max_bytes: int = 1000, on_overflow=None) -> Outbound:
    return Outbound(transport, max_bytes, on_overflow or (lambda: None))  # type: ignore[arg-type]


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each whole, final, unmasked frame in ``data`` (RFC 6455 5.2);
    fails on a partial frame, so a write that split a frame would be caught."""
    frames, at = [], 0
    while at < len(data):
        first, second = data[at], data[at + 1]
        assert first & 0x80 and not second & 0x80, "final and unmasked"
        size, at = second & 0x7F, at + 2
        if size == 126:
            (size,), at = struct.unpack_from("!H", data, at), at + 2
        elif size == 127:
            (size,), at = struct.unpack_from("!Q", data, at), at + 8
        assert at + size <= len(data), "a frame split across writes"
        frames.append((first & 0x0F, data[at : at + size]))
        at += size
    return frames


def test_text_frame_headers():
    assert text_frame(b"hi") == b"\x81\x02hi"
    assert text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert text_frame(b"x" * 70000)[:2] == b"\x81\x7f"


def test_close_frame_fits_a_control_frame():
    assert close_frame(1001, b"bye") == b"\x88\x05\x03\xe9bye"
    assert len(close_frame(1000, b"x" * 500)) == 2 + 125


async def test_frames_queued_in_one_tick_are_written_once():
    transport = FakeTransport()
    out = outbound(transport)
    for payload in (b"a", b"bb", b"ccc"):
        out.put(payload)
    await asyncio.sleep(0)
    assert transport.writes == [b"\x81\x01a\x81\x02bb\x81\x03ccc"]


async def test_a_fan_out_frames_a_publication_once_and_flushes_every_queue_in_one_callback():
    transports = [FakeTransport() for _ in range(50)]
    queues = [outbound(t) for t in transports]
    loop = asyncio.get_running_loop()
    scheduled: list[object] = []
    call_soon = loop.call_soon

    def counting_call_soon(callback, *args, **kwargs):  # type: ignore[no-untyped-def]
        scheduled.append(callback)
        return call_soon(callback, *args, **kwargs)

    loop.call_soon = counting_call_soon  # type: ignore[method-assign]
    try:
        payload = b'{"op":"msg","ch":"lobby","offset":1,"data":{}}'
        for queue in queues:
            queue.put(payload)
    finally:
        loop.call_soon = call_soon  # type: ignore[method-assign]
    assert len(scheduled) == 1  # one flush for the 50 queues, not one each
    assert all(not t.writes for t in transports)  # nothing written before the loop turns
    await asyncio.sleep(0)
    writes = [t.writes for t in transports]
    assert writes == [[text_frame(payload)]] * 50
    # the same bytes object on every connection: framed (header + copy) once
    assert len({id(w[0]) for w in writes}) == 1
    assert wire(payload) is writes[0][0]


def test_publication_age_reads_ts_without_decoding_and_ignores_what_is_not_a_time():
    now_ms = time.time() * 1000
    age = publication_age(Publication(1, b'{"text":"x","user":"u","ts":%.3f}' % (now_ms - 1500)))
    assert age is not None and 1.4 < age < 3.0
    # a quote inside a string is escaped: text that looks like "ts": is not the key
    text = b'{"text":"\\"ts\\":5","ts":%.3f}' % now_ms
    assert publication_age(Publication(1, text)) is not None
    for data in (b'{"text":"x"}', b'{"ts":true}', b'{"ts":"soon"}', b"not json", b'{"ts":NaN}'):
        assert publication_age(Publication(1, data)) is None, data


async def test_a_transport_that_fails_to_write_does_not_stop_the_others_flushing():
    class Broken(FakeTransport):
        def write(self, data: bytes) -> None:
            raise RuntimeError("the transport broke")

    broken, healthy = Broken(), FakeTransport()
    first, second = outbound(broken), outbound(healthy)
    first.put(b"x")
    second.put(b"y")
    await asyncio.sleep(0)
    assert healthy.writes == [text_frame(b"y")]
    first.put(b"again")  # the broken one is scheduled again, not stuck
    second.put(b"z")
    await asyncio.sleep(0)
    assert healthy.writes == [text_frame(b"y"), text_frame(b"z")]


async def test_every_write_is_whole_frames_a_client_parses():
    transport = FakeTransport()
    out = outbound(transport, max_bytes=10**6)
    payloads = [b'{"n":%d,"pad":"%s"}' % (i, b"p" * (i * 997 % 70000)) for i in range(30)]
    for payload in payloads:
        out.put(payload)
    await asyncio.sleep(0)
    out.put(b'{"last":1}')
    out.finish(1001, b"going away")
    frames = [item for write in transport.writes for item in parse_frames(write)]
    assert [data for opcode, data in frames if opcode == 0x1] == [*payloads, b'{"last":1}']
    assert frames[-1] == (0x8, b"\x03\xe9going away")  # close, 1001, and it is the last


async def test_overflow_counts_the_transport_buffer_and_stops_the_queue():
    transport = FakeTransport()
    overflowed: list[bool] = []
    out = outbound(transport, 100, lambda: overflowed.append(True))
    transport.buffered = 90
    assert out.put(b"x" * 5) is True
    assert out.put(b"x" * 10) is False
    assert overflowed == [True]
    assert out.put(b"x") is False
    await asyncio.sleep(0)
    assert transport.writes == []  # nothing more is written to a closed queue


async def test_finish_writes_the_queue_then_the_close_frame_and_nothing_after():
    transport = FakeTransport()
    out = outbound(transport)
    out.put(b"one")
    assert out.finish(4108, b"outbound queue full") is True
    assert transport.writes == [text_frame(b"one") + close_frame(4108, b"outbound queue full")]
    assert out.put(b"two") is False
    assert out.finish(1000, b"again") is False
    await asyncio.sleep(0)
    assert len(transport.writes) == 1


async def test_finish_drops_frames_held_for_a_connection_never_set_up():
    transport = FakeTransport()
    out = outbound(transport)
    out.held = True
    out.put(b'{"op":"hello"}')
    out.finish(1013, b"try again later")
    assert transport.writes == [close_frame(1013, b"try again later")]


async def test_finish_on_a_closing_transport_writes_nothing():
    transport = FakeTransport()
    transport.closing = True
    out = outbound(transport)
    assert out.finish(1001, b"") is True
    assert transport.writes == []


async def test_a_connections_ended_flag_wakes_every_waiter_and_survives_a_cancelled_one():
    ended = Ended()
    first = asyncio.ensure_future(ended.wait())
    second = asyncio.ensure_future(ended.wait())
    impatient = asyncio.ensure_future(ended.wait())
    await asyncio.sleep(0)
    impatient.cancel()
    await asyncio.sleep(0)
    assert not ended.is_set() and not first.done()
    ended.set()
    await asyncio.wait_for(asyncio.gather(first, second), 1)
    assert ended.is_set() and impatient.cancelled()
    await asyncio.wait_for(ended.wait(), 1)  # once set, waiting returns at once
