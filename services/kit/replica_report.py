"""Each replica tells the admin console what it is doing, every ``report_seconds``.

A small JSON report (connections, subscriptions, event-loop lag, heartbeat interval,
memory, frames in and out so far, draining, the busiest channels) is published
*ephemerally* on the backplane channel :data:`REPORT_CHANNEL`: delivered live to whoever
listens (the admin service), never stored. Why the backplane and not Prometheus: the
console is live (pushed every two seconds, not scraped every fifteen), and the busiest
channels cannot be Prometheus labels (their names are user input: unbounded cardinality).
Counters are sent as totals; the console turns two reports into rates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from .background import stoppable, wait_or_stop
from .backplane import BackplaneUnavailable
from .service import ServiceContext

__all__ = ["BUSIEST_PER_REPLICA", "REPORT_CHANNEL", "replica_report", "report_lifecycle"]

log = logging.getLogger(__name__)

#: the admin service's namespace ("admin:") + its channel: its hub delivers it as "replicas"
REPORT_CHANNEL = "admin:replicas"
BUSIEST_PER_REPLICA = 10
REPORT_TIMEOUT = 2.0  # a report that cannot be published by then is skipped

_GAUGES = {
    "wwws_connections": "connections",
    "wwws_subscriptions": "subscriptions",
    "wwws_channels": "channels",
    "wwws_event_loop_lag_seconds": "loop_lag",
    "wwws_heartbeat_interval_seconds": "heartbeat",
    "wwws_draining": "draining",
    "process_resident_memory_bytes": "memory",
}
_COUNTERS = {
    "wwws_messages_received_total": "received",
    "wwws_messages_sent_total": "sent",
    "wwws_slow_consumer_disconnects_total": "slow_consumers",
}


def replica_report(ctx: ServiceContext) -> dict[str, Any]:
    """This replica's state now, read from its own metrics registry (one source of truth
    with /metrics) plus the hub's busiest channels."""
    report: dict[str, Any] = {
        "service": ctx.spec.name,
        "node": ctx.settings.node_id,
        "ts": round(time.time(), 3),
        "interval": ctx.settings.report_seconds,
        "received": 0.0,
        "sent": 0.0,
        "slow_consumers": 0.0,
    }
    for family in ctx.metrics.registry.collect():
        for sample in family.samples:
            if sample.name in _GAUGES:
                report[_GAUGES[sample.name]] = sample.value
            elif sample.name in _COUNTERS:
                report[_COUNTERS[sample.name]] += sample.value  # summed over op labels
    report["draining"] = bool(report.get("draining")) or ctx.replica.draining
    report["busiest"] = [list(item) for item in ctx.hub.busiest(BUSIEST_PER_REPLICA)]
    return report


async def _report_forever(ctx: ServiceContext, stop: asyncio.Event) -> None:
    interval = ctx.settings.report_seconds
    while not stop.is_set():
        try:
            payload = orjson.dumps(replica_report(ctx))
            await asyncio.wait_for(
                ctx.backplane.broker.publish(REPORT_CHANNEL, payload, history=False),
                REPORT_TIMEOUT,
            )
        except (BackplaneUnavailable, TimeoutError):
            log.debug("replica report skipped: backplane unavailable")
        await wait_or_stop(stop, interval)


#: the aiohttp cleanup context publishing the reports while the app runs
report_lifecycle = stoppable(
    "replica-report",
    _report_forever,
    REPORT_TIMEOUT + 1.0,
    enabled=lambda ctx: ctx.settings.report_seconds > 0,
)
