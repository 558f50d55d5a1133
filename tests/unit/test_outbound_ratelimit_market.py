from __future__ import annotations

import asyncio
import itertools

from services.kit.outbound import Outbound, text_frame
from services.kit.ratelimit import FloodGuard, Verdict
from services.ticker.market import Market


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False


def test_text_frame_headers():
    assert text_frame(b"hi") == b"\x81\x02hi"
    assert text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert text_frame(b"x" * 70000)[:2] == b"\x81\x7f"


async def test_frames_queued_in_one_tick_are_written_once():
    transport = FakeTransport()
    out = Outbound(transport, 1000, lambda: None)  # type: ignore[arg-type]
    for payload in (b"a", b"bb", b"ccc"):
        out.put(payload)
    await asyncio.sleep(0)
    assert transport.writes == [b"\x81\x01a\x81\x02bb\x81\x03ccc"]


async def test_overflow_counts_the_transport_buffer_and_stops_the_queue():
    transport = FakeTransport()
    overflowed: list[bool] = []
    out = Outbound(transport, 100, lambda: overflowed.append(True))  # type: ignore[arg-type]
    transport.buffered = 90
    assert out.put(b"x" * 5) is True
    assert out.put(b"x" * 10) is False
    assert overflowed == [True]
    assert out.put(b"x") is False
    await asyncio.sleep(0)
    assert transport.writes == []  # nothing more is written to a closed queue


def test_flood_guard_refuses_then_closes():
    guard = FloodGuard(rate=1.0, burst=3, strikes=2)
    verdicts = [guard.check() for _ in range(6)]
    assert verdicts[:3] == [Verdict.ALLOW] * 3
    assert verdicts[3:5] == [Verdict.REFUSE] * 2
    assert verdicts[5] is Verdict.CLOSE


def test_market_is_deterministic_per_seed():
    one, two, other = Market(("A", "B"), 7), Market(("A", "B"), 7), Market(("A", "B"), 8)
    series = [one.tick() for _ in range(5)]
    assert series == [two.tick() for _ in range(5)]
    assert series != [other.tick() for _ in range(5)]
    assert all(0.9949 <= b["A"] / a["A"] <= 1.0051 for a, b in itertools.pairwise(series))
