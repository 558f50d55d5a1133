"""The price feed: one producer (not a gateway) publishing simulated prices.

Run once per stack: ``python -m services.ticker.feed``. Gateways serve the prices;
this process only needs the backplane and its internal health/metrics port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

import orjson
from aiohttp import web

from services.kit.backplane import Backplane, BackplaneUnavailable, open_backplane
from services.kit.hub import ChannelHub
from services.kit.internal import build_internal_app
from services.kit.logs import configure_logging
from services.kit.metrics import Metrics
from services.kit.replica import ReplicaState
from services.kit.settings import EnvReader, SettingsError

from .market import DEFAULT_SYMBOLS, Market

__all__ = ["FeedSettings", "run_feed"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedSettings:
    backplane_url: str = "memory://"
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    interval_seconds: float = 0.5
    seed: int = 42
    internal_port: int = 9000
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FeedSettings:
        reader = EnvReader(os.environ if environ is None else environ)
        symbols = reader.text("WWWS_FEED_SYMBOLS", ",".join(cls.symbols))
        settings = cls(
            backplane_url=reader.secret("WWWS_BACKPLANE_URL", cls.backplane_url),
            symbols=tuple(s.strip() for s in symbols.split(",") if s.strip()),
            interval_seconds=reader.number("WWWS_FEED_INTERVAL_SECONDS", cls.interval_seconds),
            seed=reader.integer("WWWS_FEED_SEED", cls.seed),
            internal_port=reader.integer("WWWS_INTERNAL_PORT", cls.internal_port),
            log_level=reader.text("WWWS_LOG_LEVEL", cls.log_level).upper(),
        )
        if reader.problems:
            raise SettingsError("invalid settings: " + "; ".join(reader.problems))
        return settings


async def run_feed(
    settings: FeedSettings, stop: asyncio.Event, backplane: Backplane | None = None
) -> None:
    if backplane is None:
        backplane = open_backplane(settings.backplane_url, history_size=100, history_ttl=3600)
    hub = ChannelHub(backplane, "ticker")
    metrics = Metrics.create("ticker-feed")
    replica = ReplicaState(socket.gethostname())
    runner = web.AppRunner(build_internal_app(replica, backplane, metrics), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", settings.internal_port).start()
    published = metrics.messages_sent.labels("ticker-feed", "price")
    market = Market(settings.symbols, settings.seed)
    log.info("feed started", extra={"event": "start", "symbols": list(settings.symbols)})
    try:
        while not stop.is_set():
            ts = round(time.time() * 1000, 3)
            for symbol, price in market.tick().items():
                payload = orjson.dumps({"symbol": symbol, "price": price, "ts": ts})
                try:
                    await hub.publish(symbol, payload)
                    published.inc()
                except BackplaneUnavailable as error:
                    metrics.backplane_errors.inc()
                    log.warning("publish failed", extra={"event": "error", "error": str(error)})
                    break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=settings.interval_seconds)
    finally:
        replica.draining = True
        await runner.cleanup()
        await backplane.close()
        log.info("feed stopped", extra={"event": "stop"})


def main() -> None:
    try:
        settings = FeedSettings.from_env()
    except SettingsError as error:
        print(f"ticker-feed: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, "ticker-feed", socket.gethostname())

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_feed(settings, stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
