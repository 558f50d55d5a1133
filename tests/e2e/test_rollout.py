"""`make rollout S=chat` (deploy/rollout.sh) replaces every chat replica of the running
stack while clients talk and newcomers connect: every acknowledged message reaches every
client once, in order; clients see only 1001 (drain); no handshake fails."""

from __future__ import annotations

import asyncio
import os

from chat_room import ChatRoom, Newcomers
from stack import ROOT, Stack
from stack_fixtures import compose_up

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
    room = ChatRoom(stack, ROOM, [f"roll{i}" for i in range(CLIENTS)])
    await room.join()
    newcomers = Newcomers(stack, ROOM)
    newcomers.start()
    try:
        async with room.talking():
            await asyncio.sleep(1)
            returncode, output = await run_rollout(stack, "chat")
            await asyncio.sleep(1)
        await newcomers.stop()
        handshakes, handshake_failures = newcomers.attempts, newcomers.failures
        assert returncode == 0, output
        assert output.count("draining") == stack.chat_replicas, output
        assert f"{stack.chat_replicas} replica(s) replaced" in output
        after = {c.id for c in stack.containers("chat")}
        assert len(after) == stack.chat_replicas and not after & before, "old replicas remain"
        await room.check_every_acknowledged_message_once_in_order()
        for client in room.clients:
            assert set(client.close_codes) <= {1001}, client.close_codes
        assert sum(client.reconnects for client in room.clients) >= 1, "no client was drained"
        assert handshakes > 50
        assert handshake_failures == 0, f"{handshake_failures} of {handshakes} handshakes failed"
    finally:
        await newcomers.stop()
        await room.leave()
        await compose_up(stack)
