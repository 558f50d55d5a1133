"""The alert and recording rules are loaded by the stack's real Prometheus and evaluate
without error against its real series (their semantics are `promtool test rules`,
deploy/prometheus/rules_test.yml, run by `make check-rules` before the tests)."""

from __future__ import annotations

import asyncio

import aiohttp
from stack import Stack

ALERTS = {
    "WwwsReplicaDown",
    "WwwsEventLoopLagHigh",
    "WwwsSlowConsumerSpike",
    "WwwsBackplaneErrors",
    "WwwsHandshakeRefusalsSpike",
    "TraefikHigh5xxRatio",
    "TlsCertificateExpiresSoon",
}


async def test_prometheus_loads_and_evaluates_every_rule(stack: Stack):
    url = f"http://127.0.0.1:{stack.prometheus_port}/api/v1/rules"
    rules: list[dict] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(40):  # rules are evaluated every 15 s
            async with session.get(url) as response:
                assert response.status == 200
                groups = (await response.json())["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            if rules and all(rule.get("lastEvaluation", "").startswith("20") for rule in rules):
                break
            await asyncio.sleep(1)
    assert {rule["name"] for rule in rules if rule["type"] == "alerting"} == ALERTS
    for rule in rules:
        assert rule["health"] == "ok", rule
        assert rule.get("lastError", "") == "", rule
    # the recording rules produce series from the replicas' real metrics
    async with aiohttp.ClientSession() as session:
        query = f"http://127.0.0.1:{stack.prometheus_port}/api/v1/query"
        async with session.get(query, params={"query": "wwws:connections:sum"}) as response:
            result = (await response.json())["data"]["result"]
    assert {series["metric"]["job"] for series in result} >= {"chat", "ticker", "telephony"}
