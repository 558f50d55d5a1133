"""The console's picture of the deployment, built from the replicas' own reports.

Every replica of every service publishes a report every few seconds
(:mod:`services.kit.replica_report`, an ephemeral backplane channel). The console keeps
the latest report per replica, turns consecutive counter totals into rates, keeps a short
series per replica for the sparklines, and merges the busiest channels per service. A
replica that stops reporting is shown as ``silent`` after three intervals and dropped
after :data:`FORGET_AFTER` seconds.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.kit import Publication

__all__ = ["FORGET_AFTER", "SERIES_POINTS", "Console"]

log = logging.getLogger(__name__)

#: points per sparkline: five minutes at the default report interval of 2 s
SERIES_POINTS = 150
FORGET_AFTER = 60.0
BUSIEST_CHANNELS = 10


@dataclass(eq=False)
class _Replica:
    service: str
    node: str
    report: dict[str, Any]
    heard: float  # monotonic time of the last report
    rates: dict[str, float] = field(default_factory=lambda: {"in": 0.0, "out": 0.0})
    series: collections.deque[list[float]] = field(
        default_factory=lambda: collections.deque(maxlen=SERIES_POINTS)
    )


class Console:
    """Receives replica reports (a hub subscriber of the ephemeral report channel)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._replicas: dict[tuple[str, str], _Replica] = {}

    # -- hub subscriber ---------------------------------------------------------------
    def deliver(self, channel: str, publication: Publication, frame: bytes) -> None:
        try:
            report = orjson.loads(publication.data)
            key = (str(report["service"]), str(report["node"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignored a malformed replica report")
            return
        self.take(key, report)

    def resubscribed(self, channel: str, result: object) -> None:
        return None  # ephemeral: nothing to catch up

    # -- state ------------------------------------------------------------------------
    def take(self, key: tuple[str, str], report: dict[str, Any]) -> None:
        now = self._clock()
        replica = self._replicas.get(key)
        if replica is None:
            replica = self._replicas[key] = _Replica(key[0], key[1], report, now)
        else:
            elapsed = float(report.get("ts", 0)) - float(replica.report.get("ts", 0))
            if elapsed > 0:
                for name, counter in (("in", "received"), ("out", "sent")):
                    delta = float(report.get(counter, 0)) - float(replica.report.get(counter, 0))
                    # a restarted process starts its counters again from zero
                    replica.rates[name] = max(0.0, delta) / elapsed
            replica.report, replica.heard = report, now
        replica.series.append(
            [
                round(float(report.get("ts", 0)), 3),
                float(report.get("connections", 0)),
                round(replica.rates["in"], 2),
                round(replica.rates["out"], 2),
                round(float(report.get("loop_lag", 0)) * 1000, 2),
            ]
        )

    def forget_silent(self) -> None:
        now = self._clock()
        for key in [k for k, r in self._replicas.items() if now - r.heard > FORGET_AFTER]:
            del self._replicas[key]

    def known_channels(self, service: str) -> list[str]:
        return [name for name, _ in self._busiest(service)]

    def _busiest(self, service: str | None = None) -> list[tuple[str, int]]:
        totals: collections.Counter[str] = collections.Counter()
        for replica in self._replicas.values():
            if service is not None and replica.service != service:
                continue
            for name, subscribers in replica.report.get("busiest", []):
                totals[f"{replica.service}/{name}" if service is None else name] += subscribers
        return sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:BUSIEST_CHANNELS]

    def snapshot(self) -> dict[str, Any]:
        """The ``console`` frame: every replica, the busiest channels, the series."""
        self.forget_silent()
        now = self._clock()
        replicas = []
        for (service, node), replica in sorted(self._replicas.items()):
            report = replica.report
            interval = float(report.get("interval", 2.0)) or 2.0
            replicas.append(
                {
                    "service": service,
                    "node": node,
                    "connections": int(report.get("connections", 0)),
                    "subscriptions": int(report.get("subscriptions", 0)),
                    "channels": int(report.get("channels", 0)),
                    "loop_lag_ms": round(float(report.get("loop_lag", 0)) * 1000, 2),
                    "heartbeat_seconds": float(report.get("heartbeat", 0)),
                    "memory_bytes": int(report.get("memory", 0)),
                    "in_per_second": round(replica.rates["in"], 2),
                    "out_per_second": round(replica.rates["out"], 2),
                    "slow_consumers": int(report.get("slow_consumers", 0)),
                    "draining": bool(report.get("draining", False)),
                    "silent": now - replica.heard > 3 * interval,
                    "series": list(replica.series),
                }
            )
        channels = []
        for name, subscribers in self._busiest():
            service, _, channel = name.partition("/")
            channels.append({"service": service, "ch": channel, "subscribers": subscribers})
        return {"op": "console", "replicas": replicas, "channels": channels}
