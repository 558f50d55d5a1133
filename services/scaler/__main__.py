"""``python -m services.scaler``: every WWWS_SCALER_INTERVAL_SECONDS, read each scalable
service's load from Prometheus and set its replica count (policy.decide). Decisions are
logged (one line each, with the reason) and exported on :9000/metrics; /healthz answers
while the loop runs."""

from __future__ import annotations

import asyncio
import logging
import os
import time

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from services.kit.logs import configure_logging

from .load import ServiceSignals, read_signals
from .policy import Bounds, Limits, Load, decide
from .swarm import SwarmServices

log = logging.getLogger("services.scaler")


class ScalerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.replicas = Gauge(
            "wwws_scaler_replicas",
            "Replicas the scaler last saw or set, by stack service",
            ["service"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "wwws_scaler_decisions",
            "Replica changes made",
            ["service", "direction"],
            registry=self.registry,
        )
        self.errors = Counter("wwws_scaler_errors", "Rounds that failed", registry=self.registry)


def limits_from_env() -> Limits:
    env = os.environ
    return Limits(
        connections_per_replica=float(env.get("WWWS_SCALER_CONNECTIONS_PER_REPLICA", "5000")),
        lag=float(env.get("WWWS_SCALER_LAG_SECONDS", "0.1")),
        cpu=float(env.get("WWWS_SCALER_CPU", "0.8")),
        cooldown=float(env.get("WWWS_SCALER_COOLDOWN_SECONDS", "60")),
    )


def one_round(
    services: SwarmServices,
    prometheus_url: str,
    limits: Limits,
    last_change: dict[str, float],
    metrics: ScalerMetrics,
) -> None:
    signals = read_signals(prometheus_url)
    now = time.monotonic()
    for service in services.scalable():
        seen = signals.get(service.job, ServiceSignals())
        load = Load(service.replicas, seen.connections, seen.lag, seen.cpu)
        bounds = Bounds(service.minimum, service.maximum)
        decision = decide(load, bounds, limits, now, last_change.get(service.name, float("-inf")))
        metrics.replicas.labels(service.job).set(decision.replicas)
        if not decision.changes(service.replicas):
            continue
        direction = "up" if decision.replicas > service.replicas else "down"
        log.info(
            "scale %s %s: %d -> %d (%s)",
            service.job,
            direction,
            service.replicas,
            decision.replicas,
            decision.reason,
            extra={"event": "scale", "job": service.job, "replicas": decision.replicas},
        )
        services.scale(service.name, decision.replicas)
        metrics.decisions.labels(service.job, direction).inc()
        last_change[service.name] = now


async def run_loop(app: web.Application) -> None:
    stack = os.environ.get("WWWS_STACK", "wwws")
    prometheus_url = os.environ.get("WWWS_PROMETHEUS_URL", "http://prometheus:9090")
    interval = float(os.environ.get("WWWS_SCALER_INTERVAL_SECONDS", "10"))
    limits = limits_from_env()
    metrics = app[METRICS]
    services = await asyncio.to_thread(SwarmServices, stack)
    last_change: dict[str, float] = {}
    log.info("scaling the services of stack %s every %ss: %s", stack, interval, limits)
    while True:
        try:
            await asyncio.to_thread(
                one_round, services, prometheus_url, limits, last_change, metrics
            )
        except Exception:  # a failed round (Prometheus or the engine away) is retried next time
            metrics.errors.inc()
            log.exception("scaling round failed")
        await asyncio.sleep(interval)


METRICS = web.AppKey("scaler_metrics", ScalerMetrics)
LOOP = web.AppKey("scaler_loop", asyncio.Task[None])


async def _loop_ctx(app: web.Application):  # type: ignore[no-untyped-def]
    app[LOOP] = asyncio.create_task(run_loop(app))
    yield
    app[LOOP].cancel()


async def _healthz(request: web.Request) -> web.Response:
    if request.app[LOOP].done():
        return web.Response(status=503, text="the scaling loop stopped\n")
    return web.Response(text="ok\n")


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


def build_app() -> web.Application:
    app = web.Application()
    app[METRICS] = ScalerMetrics()
    app.cleanup_ctx.append(_loop_ctx)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    return app


def main() -> None:
    configure_logging(os.environ.get("WWWS_LOG_LEVEL", "INFO"), "scaler", "scaler")
    web.run_app(build_app(), host="0.0.0.0", port=9000, print=None)


if __name__ == "__main__":
    main()
