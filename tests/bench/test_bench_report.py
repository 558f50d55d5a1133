"""The bench's report from synthetic results: ratios pair the right targets, say which
way is better, and list problems. Pure functions: no servers, no clients."""

from __future__ import annotations

from typing import Any

from bench.report import pairs, render_report


def result(fps: float, p99: float, kib: float, error: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "fanout": {"max_delivered_fps": fps, "by_subscribers": []},
        "latency": {"latency_ms": {"p50": p99 / 3, "p99": p99, "max": p99 * 2}},
        "idle": {"kib_per_connection": {"server": kib}, "connect_rate_per_s": 1000.0},
    }
    if error:
        out["churn"] = {"error": error}
    return out


def data(results: dict[str, Any]) -> dict[str, Any]:
    return {
        "started": "20260101T000000Z",
        "wall_seconds": 600.0,
        "machine": {"cpus": 2, "python": "3.11"},
        "results": results,
    }


def test_pairs_compare_direct_with_direct_and_proxied_with_proxied() -> None:
    results = {
        name: result(1, 1, 1)
        for name in ("wwws-direct", "wwws-traefik", "naive-direct", "socketio-node")
    }
    assert pairs(results) == [
        ("wwws-direct", "naive-direct"),
        ("wwws-traefik", "socketio-node"),
        ("wwws-traefik", "wwws-direct"),
    ]


def test_report_divides_wwws_by_each_target_and_lists_problems() -> None:
    report = render_report(
        data(
            {
                "wwws-direct": result(120_000, 10.0, 15.0),
                "naive-direct": result(60_000, 40.0, 12.0, error="cut after 60s"),
            }
        )
    )
    rows = {line.split(" | ")[0]: line for line in report.splitlines() if line.startswith("| ")}
    assert "2.00x" in rows["| fan-out: max delivered frames/s (largest room) ↑"]
    assert "0.25x" in rows["| latency p99 (fixed load) ↓"]
    assert "1.25x" in rows["| idle: server memory per connection ↓"]
    assert "- naive-direct / churn: cut after 60s" in report


def test_missing_numbers_show_a_dash_not_a_crash() -> None:
    report = render_report(data({"wwws-direct": {}, "naive-direct": result(1, 1, 1)}))
    assert "—" in report
