"""Each service's load, as Prometheus has it: three instant queries per round, one series
per service (``job``), whatever the number of replicas."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from dataclasses import dataclass

__all__ = ["QUERIES", "ServiceSignals", "read_signals"]

#: signal -> PromQL (job = the service's name in the stack, deploy/swarm/prometheus.yml)
QUERIES = {
    "connections": "sum by (job) (wwws_connections)",
    "lag": "max by (job) (wwws_event_loop_lag_seconds)",
    "cpu": "max by (job) (rate(process_cpu_seconds_total[30s]))",
}


@dataclass(frozen=True, slots=True)
class ServiceSignals:
    connections: float = 0.0
    lag: float = 0.0
    cpu: float = 0.0


def _query(prometheus_url: str, promql: str, timeout: float) -> dict[str, float]:
    url = f"{prometheus_url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus refused {promql!r}: {body.get('error', body)}")
    return {
        str(series["metric"].get("job", "")): float(series["value"][1])
        for series in body["data"]["result"]
    }


def read_signals(prometheus_url: str, timeout: float = 5.0) -> dict[str, ServiceSignals]:
    """job -> its signals; a service Prometheus has no series for is absent (not zero)."""
    by_signal = {name: _query(prometheus_url, promql, timeout) for name, promql in QUERIES.items()}
    jobs = set().union(*by_signal.values())
    return {
        job: ServiceSignals(
            connections=by_signal["connections"].get(job, 0.0),
            lag=by_signal["lag"].get(job, 0.0),
            cpu=by_signal["cpu"].get(job, 0.0),
        )
        for job in jobs
    }
