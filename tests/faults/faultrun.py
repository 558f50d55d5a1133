"""Run one scenario: every flow's users at work, the fault, recovery, then the checks."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass, field

from helpers import eventually
from injections import APP_SERVICES, FaultContext, Scenario, heal
from netcut import NetCut
from stack import Stack
from workload import CallFlow, ChatFlow, Flow, TickerFlow

from clients.wwws import Client

__all__ = ["Outcome", "run_scenario"]

WARMUP_SECONDS = 2.0  # traffic before the fault
AFTER_SECONDS = 3.0  # traffic once every client is live again
LIVE_TIMEOUT = 60.0
DELIVERY_TIMEOUT = 20.0
# the pong may take half of it: generous enough for a busy 2-core machine
CLIENT_HEARTBEAT = 4.0


@dataclass
class Outcome:
    scenario: str
    #: seconds from the fault until every client that lost its connection was live again
    live_again_after: float
    #: per aspect (chat, ticker, ticker-prices, presence, call, clients): what went wrong
    problems: dict[str, list[str]] = field(default_factory=dict)
    close_codes: dict[str, list[int]] = field(default_factory=dict)


async def run_scenario(stack: Stack, scenario: Scenario) -> Outcome:
    await heal(stack)
    netcut = NetCut(stack.https_port)
    await netcut.start()
    tag = scenario.name

    def connect(service: str, user: str) -> Client:
        # through the cuttable relay; backoff and heartbeat are the user's choices
        return Client(
            f"wss://localhost:{netcut.port}/{service}/ws",
            stack.token(user),
            ssl_context=stack.ssl_context(),
            backoff_base=0.05,
            backoff_cap=1.0,
            heartbeat=CLIENT_HEARTBEAT,
        )

    async with stack.session() as http:
        ticker = TickerFlow(connect, tag, stack, http)
        calls = CallFlow(connect, tag)
        calls.state_kept = scenario.state_kept
        flows: list[Flow] = [ChatFlow(connect, tag), ticker, calls]
        fault = FaultContext(stack, netcut, {})
        try:
            for flow in flows:
                await flow.start()
            return await _through_the_fault(fault, scenario, flows, ticker)
        finally:
            for flow in flows:
                await flow.close()
            await netcut.stop()
            for cleanup in fault.cleanups:
                await cleanup()


async def _through_the_fault(
    fault: FaultContext, scenario: Scenario, flows: list[Flow], ticker: TickerFlow
) -> Outcome:
    clients = {name: c for flow in flows for name, c in flow.clients.items()}
    fault.clients = {
        s: [c for f in flows if f.service == s for c in f.clients.values()] for s in APP_SERVICES
    }
    stop = asyncio.Event()
    work = [asyncio.create_task(flow.work(stop)) for flow in flows]
    await asyncio.sleep(WARMUP_SECONDS)  # traffic, not a wait for a condition

    reconnects = {name: c.reconnects for name, c in clients.items()}
    started = time.monotonic()
    await scenario.inject(fault)
    await eventually(
        lambda: all(c.live for c in clients.values()), timeout=LIVE_TIMEOUT, what="all live"
    )
    disrupted = [c for name, c in clients.items() if c.reconnects > reconnects[name]]
    back = max((c.live_since or started for c in disrupted), default=started)
    live_again_after = max(0.0, back - started)
    longest = max((max(c.outages, default=0.0) for c in disrupted), default=0.0)
    print(
        f"\n[faults] {scenario.name}: {len(disrupted)}/{len(clients)} clients reconnected; "
        f"every client live again {live_again_after:.1f}s after the fault began "
        f"(the longest a client was not live: {longest:.1f}s)"
    )

    prices_before = ticker.price_counts()
    await asyncio.sleep(AFTER_SECONDS)  # traffic after recovery
    stop.set()
    await asyncio.gather(*work)

    outcome = Outcome(scenario.name, live_again_after)
    with contextlib.suppress(AssertionError):  # what is still missing, the checks list
        await eventually(
            lambda: all(flow.delivered() for flow in flows),
            timeout=DELIVERY_TIMEOUT,
            what="every acknowledged item delivered",
        )
    for flow in flows:
        outcome.problems.update(await flow.problems())
    prices_after = ticker.price_counts()
    outcome.problems["ticker-prices"] = [
        f"{name}: no price since every client was live again"
        for name, count in prices_after.items()
        if count <= prices_before[name]
    ]
    outcome.close_codes = {
        name: [int(code) for code in c.close_codes] for name, c in clients.items()
    }
    seen = collections.Counter(code for codes in outcome.close_codes.values() for code in codes)
    print(f"[faults] {scenario.name}: close codes seen {dict(seen)}")
    outcome.problems["clients"] = [
        f"{name}: stopped with {c.stopped_with}, lost subscriptions {c.dropped}"
        for name, c in clients.items()
        if c.stopped_with is not None or c.dropped
    ]
    return outcome
