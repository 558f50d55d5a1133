"""Prometheus metrics of one replica.

Each app gets a registry of its own (so tests can build many apps in one process); every
series carries a ``service`` label. Names follow Prometheus conventions: counters end in
``_total`` on exposition, durations are ``_seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from .protocol import CloseCode

__all__ = ["Metrics", "close_code_label"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def close_code_label(code: int) -> str:
    """The ``code`` label of ``wwws_connections_closed_total``: a client picks the code of
    its own close frame, so only the codes RFC 6455 names (1000-1015) and this kit's
    own (protocol.CloseCode) are labels of their own; any other falls into one of three
    buckets, and no client can grow the number of series."""
    if 1000 <= code <= 1015 or code in _KIT_CLOSE_CODES:
        return str(code)
    if 3000 <= code <= 3999:
        return "3xxx"
    if 4000 <= code <= 4999:
        return "4xxx"
    return "other"


_KIT_CLOSE_CODES = frozenset(int(code) for code in CloseCode)


@dataclass(frozen=True)
class Metrics:
    service: str
    registry: CollectorRegistry
    connections: Gauge
    connections_accepted: Counter
    subscriptions: Gauge
    channels: Gauge
    publish_delivery_latency: Histogram
    slow_consumer_disconnects: Counter
    event_loop_lag: Gauge
    event_loop_lag_distribution: Histogram
    backplane_errors: Counter
    heartbeat_interval: Gauge
    heartbeat_pings: Counter
    heartbeat_timeouts: Counter
    draining: Gauge
    outbound_peak: Gauge
    # by label: use .labels(...)
    handshakes_refused: Counter  # status
    connections_closed: Counter  # code
    messages_received: Counter  # op
    messages_sent: Counter  # op
    # (counter, op) -> its child: prometheus_client's labels() takes a lock and builds a
    # key on every call, a measurable share of a handshake's few frames
    _by_op: dict[tuple[int, str], Any] = field(default_factory=dict, repr=False)

    def sent(self, op: str) -> Any:
        """``messages_sent`` for ``op`` (``.inc()`` it)."""
        return self._child(self.messages_sent, op)

    def received(self, op: str) -> Any:
        """``messages_received`` for ``op`` (``.inc()`` it)."""
        return self._child(self.messages_received, op)

    def _child(self, counter: Counter, op: str) -> Any:
        key = (id(counter), op)
        child = self._by_op.get(key)
        if child is None:
            child = self._by_op[key] = counter.labels(self.service, op)
        return child

    @classmethod
    def create(cls, service: str) -> Metrics:
        registry = CollectorRegistry(auto_describe=True)
        # process_resident_memory_bytes and friends: memory per replica is a promise we test
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, ["service"], registry=registry).labels(service)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, ["service"], registry=registry).labels(service)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            metric = Histogram(name, doc, ["service"], buckets=buckets, registry=registry)
            return metric.labels(service)

        def by(name: str, doc: str, label: str) -> Counter:
            return Counter(name, doc, ["service", label], registry=registry)

        return cls(
            service=service,
            registry=registry,
            connections=gauge("wwws_connections", "Open WebSocket connections"),
            connections_accepted=counter("wwws_connections_accepted", "Accepted handshakes"),
            subscriptions=gauge("wwws_subscriptions", "Subscriptions of open connections"),
            channels=gauge("wwws_channels", "Channels with subscribers on this replica"),
            publish_delivery_latency=histogram(
                "wwws_publish_delivery_latency_seconds",
                "From the publish timestamp to the hand-off to the subscriber's socket",
                _LATENCY_BUCKETS,
            ),
            slow_consumer_disconnects=counter(
                "wwws_slow_consumer_disconnects", "Clients closed with 4108 (outbound queue full)"
            ),
            event_loop_lag=gauge("wwws_event_loop_lag_seconds", "Latest event-loop lag sample"),
            event_loop_lag_distribution=histogram(
                "wwws_event_loop_lag_distribution_seconds", "Event-loop lag samples", _LAG_BUCKETS
            ),
            backplane_errors=counter("wwws_backplane_errors", "Failed backplane operations"),
            heartbeat_interval=gauge(
                "wwws_heartbeat_interval_seconds", "Current server ping interval"
            ),
            heartbeat_pings=counter("wwws_heartbeat_pings", "Pings sent to clients"),
            heartbeat_timeouts=counter(
                "wwws_heartbeat_timeouts", "Clients closed with 4110 (a ping unanswered)"
            ),
            draining=gauge("wwws_draining", "1 while the replica drains before it exits"),
            outbound_peak=gauge(
                "wwws_outbound_peak_bytes",
                "Most bytes any connection held waiting to be sent (its queue + socket buffer)",
            ),
            handshakes_refused=by(
                "wwws_handshakes_refused", "Refused handshakes by HTTP status", "status"
            ),
            connections_closed=by(
                "wwws_connections_closed", "Closed connections by close code", "code"
            ),
            messages_received=by("wwws_messages_received", "Client frames by op", "op"),
            messages_sent=by("wwws_messages_sent", "Server frames by op", "op"),
        )
