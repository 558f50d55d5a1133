from __future__ import annotations

import itertools

from services.kit.ratelimit import FloodGuard, Verdict
from services.ticker.market import Market


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
