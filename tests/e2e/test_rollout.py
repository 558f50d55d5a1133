"""`make rollout S=chat` (deploy/rollout.sh) replaces every chat replica of the running
stack while clients talk and newcomers connect: every acknowledged message reaches every
client once, in order; clients see only 1001 (drain); no handshake fails."""

from __future__ import annotations

import asyncio
import os

import aiohttp
from helpers import receive_op
from stack import ROOT, Stack
from stack_fixtures import compose_up

from clients.wwws import Client, ClientError, NotAcknowledged

ROOM = "e2e-rollout"
CLIENTS = 6


async def run_rollout(stack: Stack, service: str) -> tuple[int, str]:
    env = {
        **os.environ,
        **stack.env(),
        "COMPOSE": f"docker compose --env-file {stack.env_file} -f compose.yaml",
    }
    process = await asyncio.create_subprocess_exec(
        "bash",
        "deploy/rollout.sh",
        service,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=240)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def test_rollout_replaces_every_replica_without_losing_anything(stack: Stack):
    before = {c.id for c in stack.containers("chat")}
    assert len(before) == stack.chat_replicas
    url = f"{stack.wss}/chat/ws"
    clients = [
        Client(url, stack.token(f"roll{i}"), ssl_context=stack.ssl_context(), backoff_base=0.05)
        for i in range(CLIENTS)
    ]
    for client in clients:
        await client.start()
        await client.subscribe(ROOM)

    acked: dict[int, str] = {}
    stop = asyncio.Event()
    handshakes = handshake_failures = 0

    async def talk(i: int, client: Client) -> None:
        n = 0
        while not stop.is_set():
            text = f"{i}:{n}"
            n += 1
            try:
                acked[await client.publish(ROOM, {"text": text})] = text
            except (NotAcknowledged, ClientError, ConnectionError):
                await asyncio.sleep(0.1)  # not acknowledged: not promised either
            await asyncio.sleep(0.1)

    async def newcomers() -> None:
        nonlocal handshakes, handshake_failures
        async with stack.session() as session:
            while not stop.is_set():
                handshakes += 1
                try:
                    ws, _ = await stack.connect(session, "chat", "newcomer")
                    await ws.send_json({"op": "sub", "id": 1, "ch": ROOM})
                    await receive_op(ws, "subscribed")
                    await ws.close()
                except (aiohttp.ClientError, AssertionError, TimeoutError):
                    handshake_failures += 1
                await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(talk(i, c)) for i, c in enumerate(clients)]
    tasks.append(asyncio.create_task(newcomers()))
    try:
        await asyncio.sleep(1)
        returncode, output = await run_rollout(stack, "chat")
        await asyncio.sleep(1)
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    try:
        assert returncode == 0, output
        assert output.count("draining") == stack.chat_replicas, output
        assert f"{stack.chat_replicas} replica(s) replaced" in output
        after = {c.id for c in stack.containers("chat")}
        assert len(after) == stack.chat_replicas and not after & before, "old replicas remain"

        top = max(acked)
        received: dict[Client, list[tuple[int, str]]] = {c: [] for c in clients}
        for _ in range(60):
            for client in clients:
                received[client] += [(o, d["text"]) for _, o, d in client.drain_messages()]
            if all(r and r[-1][0] >= top for r in received.values()):
                break
            await asyncio.sleep(0.5)
        assert len(acked) > 100
        for client, got in received.items():
            offsets = [offset for offset, _ in got]
            assert offsets == list(range(1, offsets[-1] + 1)), "gap or duplicate"
            assert offsets[-1] >= top
            texts = dict(got)
            for offset, text in acked.items():
                assert texts[offset] == text
            assert client.gaps == []
            assert set(client.close_codes) <= {1001}, client.close_codes
        assert sum(client.reconnects for client in clients) >= 1, "no client was drained"
        assert handshakes > 50
        assert handshake_failures == 0, f"{handshake_failures} of {handshakes} handshakes failed"
    finally:
        for client in clients:
            await client.close()
        await compose_up(stack)
