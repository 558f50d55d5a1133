"""kill -9 one chat replica while clients publish steadily (runs after the drain test).

The guarantee under test (README, chat): every client ends with every acknowledged
message exactly once, in order. A message whose `pub` was not acknowledged may be
missing, and its sender was told (the publish raised).
"""

from __future__ import annotations

import asyncio
import collections

from chat_room import ChatRoom
from stack import Stack
from stack_fixtures import compose_up

ROOM = "e2e-kill"
CLIENTS = 6
SECONDS = 8.0


async def test_kill_9_a_replica_mid_conversation_loses_no_acknowledged_message(stack: Stack):
    room = ChatRoom(stack, ROOM, [f"killer{i}" for i in range(CLIENTS)])
    await room.join()
    by_node = collections.Counter(client.node for client in room.clients)
    assert len(by_node) >= 2, f"all clients on one replica: {by_node}"
    victim_node = by_node.most_common(1)[0][0]
    victims = [c for c in room.clients if c.node == victim_node]
    try:
        async with room.talking():
            await asyncio.sleep(2)
            stack.container_for(victim_node).kill()  # SIGKILL: no drain, no close frames
            await asyncio.sleep(SECONDS - 2)
        await room.check_every_acknowledged_message_once_in_order()
        for client in victims:
            assert client.reconnects >= 1 and client.node != victim_node
    finally:
        await room.leave()
        await compose_up(stack)  # Docker does not restart a replica it was told to kill
