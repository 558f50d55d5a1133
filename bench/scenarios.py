"""The six scenarios. Each is bounded in count and time, and returns plain JSON data.

All of them run in the load generator's event loop against one target whose server was
started fresh for the scenario (so a backlog left by one cannot slow down the next).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.kit.auth import mint_token

from .loadgen import (
    Client,
    ConnectResult,
    Protocol,
    Stats,
    close_all,
    connect_many,
    open_client,
    percentiles,
    stamp,
)
from .targets import Target, proc_cpu_seconds, proc_rss_kib

__all__ = ["Config", "churn", "fanout", "idle", "latency", "presence", "ticker"]


@dataclass
class Config:
    """Scaled-down defaults that fit `make bench` in < 20 min on 2 cores (see --help)."""

    fanout_subscribers: Sequence[int] = (250, 1000)
    fanout_rates: Sequence[int] = (
        10,
        20,
        40,
        80,
        160,
        240,
        320,
        480,
        640,
    )  # publications/s, ramped
    fanout_publishers: int = 40  # wwws chat: 20 publications/s per connection at most
    fanout_step_seconds: float = 3.0
    latency_subscribers: int = 1000
    latency_rate: int = 50
    latency_seconds: float = 8.0
    idle_connections: int = 10_000
    idle_connections_proxied: int = 9_000  # Traefik needs 2 fds per connection (limit 20k)
    idle_deadline: float = 55.0
    ticker_subscribers: int = 1000
    ticker_symbols: int = 100
    ticker_hz: float = 10.0
    ticker_slow_fraction: float = 0.05
    ticker_slow_symbols: int = 50
    ticker_pad_bytes: int = 2048
    ticker_phase_seconds: tuple[float, float] = (5.0, 10.0)
    churn_seconds: float = 8.0
    churn_workers: int = 20
    churn_max_cycles: int = 20_000
    presence_connections: int = 10_000
    presence_settle_max: float = 90.0  # for the adaptive interval to stop moving
    presence_seconds: float = 30.0
    burst_users: int = 2000
    connect_concurrency: int = 100
    connect_deadline: float = 60.0
    drain_limit: float = 10.0
    settle_seconds: float = 1.0  # after connecting, before measuring
    warm_up: bool = True  # one unmeasured idle run before the first measured scenario
    client_loop: str = "asyncio"  # the load generator's event loop: asyncio or uvloop

    @classmethod
    def quick(cls) -> Config:
        """The smoke: every code path, tiny counts, a few seconds per scenario."""
        return cls(
            fanout_subscribers=(50,),
            fanout_rates=(10, 20),
            fanout_publishers=4,
            fanout_step_seconds=1.0,
            latency_subscribers=50,
            latency_rate=20,
            latency_seconds=1.5,
            idle_connections=200,
            idle_connections_proxied=200,
            idle_deadline=20.0,
            ticker_subscribers=60,
            ticker_symbols=10,
            ticker_slow_fraction=0.05,
            ticker_slow_symbols=5,
            ticker_pad_bytes=256,
            ticker_phase_seconds=(1.0, 1.0),
            churn_seconds=1.0,
            churn_workers=4,
            churn_max_cycles=500,
            presence_connections=200,
            presence_settle_max=6.0,
            presence_seconds=2.0,
            burst_users=50,
            connect_deadline=20.0,
            drain_limit=2.0,
            settle_seconds=0.3,
        )


@dataclass
class Run:
    """What a scenario needs from the harness: the target and how to publish server-side."""

    target: Target
    config: Config
    redis_url: str
    extras: dict[str, Any] = field(default_factory=dict)


def room_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def cpu_now(target: Target) -> dict[str, float]:
    """CPU seconds so far of the target's processes, by role, and of the bench itself
    (``loadgen``): a load generator near one full CPU measures itself, not the target."""
    out: dict[str, float] = {"loadgen": time.process_time()}
    for role, pid in target.pids().items():
        with contextlib.suppress(OSError):
            out[role] = proc_cpu_seconds(pid)
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {role: round(after[role] - before.get(role, 0.0), 3) for role in after}


def _per_item_us(cpu: dict[str, float], items: int) -> dict[str, float]:
    """CPU microseconds per item (connection, cycle), by role."""
    return {role: round(seconds / items * 1e6, 1) for role, seconds in cpu.items()} if items else {}


async def drain(stats: Stats, limit: float, quiet: float = 0.4) -> float:
    """Wait until deliveries stop (no new frame for ``quiet`` s), at most ``limit`` s."""
    start = time.monotonic()
    last = stats.delivered
    while time.monotonic() - start < limit:
        await asyncio.sleep(quiet)
        if stats.delivered == last:
            break
        last = stats.delivered
    return time.monotonic() - start


async def paced(
    publishers: Sequence[Client],
    room_for: Callable[[int], str],
    rate: float,
    seconds: float,
    publish: Callable[[str, str], Awaitable[None]] | None = None,
) -> int:
    """Publish ``rate``/s for ``seconds`` round-robin over ``publishers`` (or through
    ``publish``, a server-side producer). Returns how many were sent."""
    sent = 0
    start = time.monotonic()
    end = start + seconds
    pending: set[asyncio.Task[None]] = set()
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = math.floor(rate * (now - start)) + 1 - sent
        for _ in range(max(0, due)):
            room = room_for(sent)
            if publish is None:
                publishers[sent % len(publishers)].publish(room, stamp())
            else:
                task = asyncio.ensure_future(publish(room, stamp()))
                pending.add(task)
                task.add_done_callback(pending.discard)
            sent += 1
        await asyncio.sleep(min(0.005, max(0.0, end - time.monotonic())))
    if pending:
        await asyncio.wait(pending, timeout=5)
    return sent


def _connect_summary(result: Any, wanted: int) -> dict[str, Any]:
    return {
        "wanted": wanted,
        "connected": len(result.clients),
        "seconds": round(result.seconds, 3),
        "rate_per_s": round(result.rate, 1),
        "failures": dict(result.failures),
        "retries": result.retries,  # e.g. sub refused with `unavailable`, then retried
    }


# -- 1. fan-out -------------------------------------------------------------------------
def ladder_saturated(
    delivered_fps: float, offered_fps: float, sent_fps: float, drain_s: float, drain_limit: float
) -> bool:
    """Whether a fan-out step found the target's limit, so the ladder stops: it delivered
    less than 85 % of what was sent to it (of what the step asked, where the load
    generator sent that much), or it needed the whole drain limit to catch up. A step
    the load generator could not send in full says nothing about the target by itself."""
    return delivered_fps < 0.85 * min(offered_fps, sent_fps) or drain_s >= drain_limit


async def fanout(run: Run) -> dict[str, Any]:
    """One room; publishers ramp the rate step by step until the target falls behind
    (``ladder_saturated``) or the steps end: the best step is the capacity."""
    cfg, target = run.config, run.target
    by_size = []
    for subscribers in cfg.fanout_subscribers:
        room = room_name("fan")
        stats = Stats()
        conn = await connect_many(
            target.base,
            target.protocol(),
            stats,
            subscribers,
            lambda i, r=room: [r],
            target.ssl_context(),
            cfg.connect_concurrency,
            cfg.connect_deadline,
        )
        size: dict[str, Any] = {
            "subscribers": subscribers,
            "connect": _connect_summary(conn, subscribers),
            "steps": [],
        }
        try:
            if len(conn.clients) < 0.95 * subscribers:
                size["error"] = "could not connect enough subscribers"
                by_size.append(size)
                continue
            n = len(conn.clients)
            publishers = conn.clients[: cfg.fanout_publishers]
            for rate in cfg.fanout_rates:
                warm = min(0.5, cfg.fanout_step_seconds / 4)
                task = asyncio.ensure_future(
                    paced(publishers, lambda _, r=room: r, rate, cfg.fanout_step_seconds)
                )
                await asyncio.sleep(warm)
                d0, t0, c0 = stats.delivered, time.monotonic(), cpu_now(target)
                stats.start_recording()
                sent = await task
                d1, t1, c1 = stats.delivered, time.monotonic(), cpu_now(target)
                stats.recording = False
                delivered_rate = (d1 - d0) / (t1 - t0)
                offered = rate * n
                # what the load generator managed to send (it shares the CPUs: near its
                # limit it sends less than the step asks, and that is not the server's)
                sent_fps = sent * n / cfg.fanout_step_seconds
                cpu = cpu_delta(c0, c1)
                frames = max(1, d1 - d0)
                step = {
                    "rate": rate,
                    "sent": sent,
                    "offered_fps": offered,
                    "sent_fps": round(sent_fps),
                    "delivered_fps": round(delivered_rate),
                    "latency_ms": percentiles(stats.latencies),
                    "cpu_s": cpu,
                    "cpu_us_per_frame": {k: round(v / frames * 1e6, 2) for k, v in cpu.items()},
                }
                step["drain_s"] = round(await drain(stats, cfg.drain_limit), 2)
                size["steps"].append(step)
                if ladder_saturated(
                    delivered_rate, offered, sent_fps, step["drain_s"], cfg.drain_limit
                ):
                    size["saturated_at_rate"] = rate
                    break
            best = max(size["steps"], key=lambda s: s["delivered_fps"], default=None)
            size["max_delivered_fps"] = best["delivered_fps"] if best else 0
            size["closes"] = dict(stats.closes)
        finally:
            await close_all(conn.clients)
        by_size.append(size)
    largest = by_size[-1] if by_size else {}
    return {
        "by_subscribers": by_size,
        "max_delivered_fps": largest.get("max_delivered_fps", 0),
        "subscribers": largest.get("subscribers", 0),
    }


# -- 2. latency -------------------------------------------------------------------------
async def latency(run: Run) -> dict[str, Any]:
    """A fixed, moderate load: ``rate`` publications/s into one room of N subscribers."""
    cfg, target = run.config, run.target
    room = room_name("lat")
    stats = Stats()
    n_wanted = cfg.latency_subscribers
    conn = await connect_many(
        target.base,
        target.protocol(),
        stats,
        n_wanted,
        lambda i: [room],
        target.ssl_context(),
        cfg.connect_concurrency,
        cfg.connect_deadline,
    )
    out: dict[str, Any] = {
        "subscribers": len(conn.clients),
        "rate": cfg.latency_rate,
        "connect": _connect_summary(conn, n_wanted),
    }
    try:
        if not conn.clients:
            out["error"] = "no connection"
            return out
        publishers = conn.clients[: max(1, min(len(conn.clients), cfg.latency_rate // 10))]
        await asyncio.sleep(cfg.settle_seconds)
        stats.start_recording()
        c0, t0 = cpu_now(target), time.monotonic()
        sent = await paced(publishers, lambda _: room, cfg.latency_rate, cfg.latency_seconds)
        out["drain_s"] = round(await drain(stats, cfg.drain_limit), 2)
        stats.recording = False
        cpu, elapsed = cpu_delta(c0, cpu_now(target)), time.monotonic() - t0
        # the cores the target and the load generator kept busy: near the machine's count,
        # the tail is queueing for a CPU, whoever's the frame is
        out["cpu_cores"] = {role: round(seconds / elapsed, 2) for role, seconds in cpu.items()}
        expected = sent * len(conn.clients)
        out.update(
            sent=sent,
            expected=expected,
            delivered=stats.delivered,
            delivered_ratio=round(stats.delivered / expected, 4) if expected else 0.0,
            latency_ms=percentiles(stats.latencies),
            cdf_ms=_cdf(stats.latencies),
            cpu_s=cpu,
            closes=dict(stats.closes),
        )
    finally:
        await close_all(conn.clients)
    return out


def _cdf(samples: Sequence[float], points: int = 200) -> list[float]:
    """``points`` evenly spaced quantiles in ms (enough to draw the CDF)."""
    if not samples:
        return []
    ordered = sorted(samples)
    n = len(ordered)
    return [
        round(ordered[min(n - 1, int(i / (points - 1) * (n - 1)))] * 1000, 3) for i in range(points)
    ]


# -- 3. idle ----------------------------------------------------------------------------
async def hold_idle(run: Run, count: int, stats: Stats, prefix: str) -> ConnectResult:
    """``count`` connections subscribed to one fresh room, 200 handshakes at a time."""
    cfg, target = run.config, run.target
    room = room_name(prefix)
    return await connect_many(
        target.base,
        target.protocol(),
        stats,
        count,
        lambda i: [room],
        target.ssl_context(),
        max(cfg.connect_concurrency, 200),
        cfg.idle_deadline,
    )


async def idle(run: Run) -> dict[str, Any]:
    """Hold many subscribed, silent connections; memory per connection = RSS delta / N."""
    cfg, target = run.config, run.target
    wanted = cfg.idle_connections_proxied if target.proxied else cfg.idle_connections
    pids = target.pids()
    await asyncio.sleep(0.5)
    before = {role: proc_rss_kib(pid) for role, pid in pids.items()}
    stats = Stats()
    cpu0 = cpu_now(target)
    conn = await hold_idle(run, wanted, stats, "idle")
    # what the servers spent on the handshakes and subscribes (the load generator's own
    # pace caps the rate; this is the servers' side of it)
    connect_cpu = cpu_delta(cpu0, cpu_now(target))
    try:
        await asyncio.sleep(2.0)
        after = {role: proc_rss_kib(pid) for role, pid in pids.items()}
        alive = sum(1 for c in conn.clients if not c.disconnected)
        held = max(1, alive)
        per_conn = {role: round((after[role] - before[role]) / held, 2) for role in pids}
        return {
            "connections": alive,
            "connect": _connect_summary(conn, wanted),
            "connect_rate_per_s": round(conn.rate, 1),
            "connect_cpu_s": connect_cpu,
            "cpu_us_per_connect": _per_item_us(connect_cpu, len(conn.clients)),
            "rss_kib_before": before,
            "rss_kib_after": after,
            "kib_per_connection": per_conn,
            "closes": dict(stats.closes),
        }
    finally:
        await close_all(conn.clients, abort=True)  # 10k close handshakes would take long


# -- 4. ticker --------------------------------------------------------------------------
async def ticker(run: Run) -> dict[str, Any]:
    """S symbols at H Hz; fast readers take one symbol each, 5% slow readers take many
    and then stop reading. Does the fast readers' delivery change when the slow ones stall?
    wwws: its ticker service, prices published server-side into the backplane (as the
    feed does). Others: published by a client over the WebSocket (their only way in)."""
    cfg, target = run.config, run.target
    symbols = [f"S{i:03d}" for i in range(cfg.ticker_symbols)]
    n_slow = max(1, round(cfg.ticker_subscribers * cfg.ticker_slow_fraction))
    n_fast = cfg.ticker_subscribers - n_slow
    base: str = run.extras.get("ticker_base", target.base)
    protocol: Protocol = run.extras.get("ticker_protocol", target.protocol())
    publish: Callable[[str, str], Awaitable[None]] | None = run.extras.get("ticker_publish")
    pad = "x" * cfg.ticker_pad_bytes
    fast, slow = Stats(), Stats()
    fast_conn = await connect_many(
        base,
        protocol,
        fast,
        n_fast,
        lambda i: [symbols[i % len(symbols)]],
        target.ssl_context(),
        cfg.connect_concurrency,
        cfg.connect_deadline,
    )
    slow_conn = await connect_many(
        base,
        protocol,
        slow,
        n_slow,
        lambda i: [symbols[(i + k) % len(symbols)] for k in range(cfg.ticker_slow_symbols)],
        target.ssl_context(),
        10,
        cfg.connect_deadline,
        user_offset=n_fast,
        rcvbuf=8192,
    )
    out: dict[str, Any] = {
        "symbols": len(symbols),
        "hz": cfg.ticker_hz,
        "fast": len(fast_conn.clients),
        "slow": len(slow_conn.clients),
        "connect": _connect_summary(fast_conn, n_fast),
    }
    publishers: list[Client] = []
    try:
        if publish is None:
            pub_conn = await connect_many(
                base,
                protocol,
                Stats(),
                4,
                lambda i: [],
                target.ssl_context(),
                user_offset=10_000,
            )
            publishers = pub_conn.clients
            if not publishers:
                out["error"] = "no publisher connection"
                return out

        async def send(room: str, text: str) -> None:
            data = orjson.dumps({"symbol": room, "price": 100.0, "text": text, "pad": pad})
            assert publish is not None
            await publish(room, data.decode())

        rate = cfg.ticker_hz * len(symbols)
        await asyncio.sleep(cfg.settle_seconds)
        phases = {}
        for phase, seconds in zip(("before", "stalled"), cfg.ticker_phase_seconds, strict=True):
            if phase == "stalled":
                for client in slow_conn.clients:
                    client.pause_reading()
            fast.start_recording()
            d0, t0 = fast.delivered, time.monotonic()
            if publish is None:
                sent = await _paced_ws(publishers, symbols, rate, seconds, pad)
            else:
                sent = await paced([], lambda k: symbols[k % len(symbols)], rate, seconds, send)
            d1, t1 = fast.delivered, time.monotonic()
            fast.recording = False
            expected_fps = len(fast_conn.clients) * cfg.ticker_hz
            phases[phase] = {
                "sent": sent,
                "fast_delivered_fps": round((d1 - d0) / (t1 - t0), 1),
                "fast_expected_fps": expected_fps,
                "fast_delivered_ratio": round((d1 - d0) / (t1 - t0) / expected_fps, 4)
                if expected_fps
                else 0.0,
                "fast_latency_ms": percentiles(fast.latencies),
            }
        out["phases"] = phases
        out["publish_failures"] = run.extras.get("publish_failures", {})
        # a paused reader cannot see its close frame: read again, then count the closes
        for client in slow_conn.clients:
            client.resume_reading()
        await asyncio.sleep(cfg.settle_seconds)
        out["slow_closed"] = sum(1 for c in slow_conn.clients if c.disconnected)
        out["slow_close_codes"] = {str(k): v for k, v in slow.closes.items()}
        before, stalled = phases["before"], phases["stalled"]
        out["fast_unaffected"] = stalled["fast_delivered_ratio"] >= 0.95 * before[
            "fast_delivered_ratio"
        ] and stalled["fast_latency_ms"].get("p99", math.inf) <= max(
            50.0, 3 * before["fast_latency_ms"].get("p99", 0.0)
        )
    finally:
        for client in slow_conn.clients:
            client.resume_reading()
        await close_all(fast_conn.clients + publishers)
        # slow readers may hold megabytes: drop them without waiting for a close handshake
        for client in slow_conn.clients:
            if client.transport is not None and not client.disconnected:
                client.transport.disconnect()
    return out


async def _paced_ws(
    publishers: Sequence[Client], symbols: Sequence[str], rate: float, seconds: float, pad: str
) -> int:
    sent = 0
    start = time.monotonic()
    end = start + seconds
    extra = {"pad": pad}
    while (now := time.monotonic()) < end:
        due = math.floor(rate * (now - start)) + 1 - sent
        for _ in range(max(0, due)):
            publishers[sent % len(publishers)].publish(symbols[sent % len(symbols)], stamp(), extra)
            sent += 1
        await asyncio.sleep(0.005)
    return sent


# -- 5. churn ---------------------------------------------------------------------------
async def churn(run: Run) -> dict[str, Any]:
    """Workers connect, subscribe, close, again, for a fixed time: sustained rate, errors."""
    cfg, target = run.config, run.target
    protocol = target.protocol()
    ctx = target.ssl_context()
    stats = Stats()
    errors: dict[str, int] = {}
    cycle_times: list[float] = []
    room = room_name("churn")
    deadline = time.monotonic() + cfg.churn_seconds
    budget = [cfg.churn_max_cycles]

    async def worker(w: int) -> None:
        k = 0
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            t = time.perf_counter()
            try:
                client = await open_client(
                    target.base, protocol, stats, w * 100_000 + k, [room], ctx, wait=5.0
                )
                await client.close()
                cycle_times.append(time.perf_counter() - t)
            except Exception as error:
                errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
            k += 1

    start, cpu0 = time.monotonic(), cpu_now(target)
    await asyncio.gather(*(worker(w) for w in range(cfg.churn_workers)))
    elapsed, cpu = time.monotonic() - start, cpu_delta(cpu0, cpu_now(target))
    return {
        "workers": cfg.churn_workers,
        "seconds": round(elapsed, 2),
        "cycles": len(cycle_times),
        "cycles_per_s": round(len(cycle_times) / elapsed, 1) if elapsed else 0.0,
        "cpu_s": cpu,
        "cpu_us_per_cycle": _per_item_us(cpu, len(cycle_times)),
        "errors": errors,
        "error_count": sum(errors.values()),
        "cycle_ms": percentiles(cycle_times),
    }


# -- 6. presence (wwws only) ---------------------------------------------------------------
def _metric(text: str, name: str) -> float:
    """The sum of a Prometheus metric's samples (every label set) in an exposition."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " ")
    )


async def _replica_metrics(target: Target) -> str:
    assert target.server is not None
    url = f"http://127.0.0.1:{target.server.extra['internal']}/metrics"

    def read() -> str:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return str(reply.read().decode())

    return await asyncio.to_thread(read)


def _redis_commands(redis_url: str) -> int:
    """Commands the bench's Redis has processed since it started."""
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    info = subprocess.run(
        ["redis-cli", "-p", port, "INFO", "stats"],
        capture_output=True, text=True, check=False, timeout=10,
    ).stdout  # fmt: skip
    for line in info.splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":")[1])
    return 0


async def presence(run: Run) -> dict[str, Any]:
    """What keeping N idle clients known-present costs a replica: pings/s, its CPU and its
    presence writes to Redis, once its interval has settled (the adaptive policy moves it
    with the load; a fixed one does not), measured over a window after one whole interval
    at the settled value (each connection's next ping is due one interval after its last).
    Then a membership burst: M distinct users join one room; how many membership frames
    (``join`` / ``members_diff``) all of them received, against the M(M+1)/2 that one
    event per join per member would cost."""
    cfg, target = run.config, run.target
    stats = Stats()
    conn = await hold_idle(run, cfg.presence_connections, stats, "presence")
    out: dict[str, Any] = {"connect": _connect_summary(conn, cfg.presence_connections)}
    try:
        interval = _metric(await _replica_metrics(target), "wwws_heartbeat_interval_seconds")
        moves = [interval]
        settled_at = time.monotonic()
        start = settled_at
        while time.monotonic() - start < cfg.presence_settle_max:
            await asyncio.sleep(min(5.0, cfg.presence_settle_max / 6))
            now = _metric(await _replica_metrics(target), "wwws_heartbeat_interval_seconds")
            if now != interval:
                interval, settled_at = now, time.monotonic()
                moves.append(now)
            elif time.monotonic() - settled_at >= min(15.0, cfg.presence_settle_max / 2):
                break
        await asyncio.sleep(min(interval, cfg.presence_settle_max))
        text = await _replica_metrics(target)
        pings0, cpu0 = _metric(text, "wwws_heartbeat_pings_total"), cpu_now(target)
        commands0, t0 = _redis_commands(run.redis_url), time.monotonic()
        await asyncio.sleep(cfg.presence_seconds)
        text = await _replica_metrics(target)
        elapsed = time.monotonic() - t0
        pings = _metric(text, "wwws_heartbeat_pings_total") - pings0
        cpu = cpu_delta(cpu0, cpu_now(target))
        alive = sum(1 for c in conn.clients if not c.disconnected)
        out.update(
            connections=alive,
            interval_s=interval,
            interval_moves=moves,
            window_s=round(elapsed, 1),
            pings_per_s=round(pings / elapsed, 1),
            server_cpu_percent=round(cpu.get("server", 0.0) / elapsed * 100, 2),
            redis_commands_per_s=round((_redis_commands(run.redis_url) - commands0) / elapsed, 1),
            closes=dict(stats.closes),
        )
    finally:
        await close_all(conn.clients, abort=True)
    out["burst"] = await _membership_burst(run)
    return out


async def _membership_burst(run: Run) -> dict[str, Any]:
    cfg, target = run.config, run.target
    assert target.server is not None
    secret = str(target.server.extra["secret"])
    members = Protocol("/chat/ws", lambda user: mint_token(f"member{user}", secret, 3600))
    stats = Stats(ops=Counter())
    room = room_name("burst")
    start = time.monotonic()
    conn = await connect_many(
        target.base,
        members,
        stats,
        cfg.burst_users,
        lambda i: [room],
        target.ssl_context(),
        cfg.connect_concurrency,
        cfg.connect_deadline,
    )
    try:
        ops = stats.ops
        assert ops is not None

        def membership_frames() -> int:
            return ops[b"join"] + ops[b"members_diff"]

        seen = -1
        while membership_frames() != seen and time.monotonic() - start < 60:
            seen = membership_frames()
            await asyncio.sleep(1.0)
        n = len(conn.clients)
        frames = membership_frames()
        uncoalesced = n * (n + 1) // 2
        return {
            "users": n,
            "connect": _connect_summary(conn, cfg.burst_users),
            "seconds": round(time.monotonic() - start, 1),
            "membership_frames": frames,
            "join_frames": ops[b"join"],
            "members_diff_frames": ops[b"members_diff"],
            "frames_per_user": round(frames / n, 1) if n else 0.0,
            "uncoalesced_frames": uncoalesced,
            "share_of_uncoalesced": round(frames / uncoalesced, 4) if uncoalesced else 0.0,
        }
    finally:
        await close_all(conn.clients, abort=True)


SCENARIOS: dict[str, Callable[[Run], Awaitable[dict[str, Any]]]] = {
    "idle": idle,
    "fanout": fanout,
    "latency": latency,
    "ticker": ticker,
    "churn": churn,
    "presence": presence,
}
