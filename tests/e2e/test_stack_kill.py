"""kill -9 one chat replica while clients publish steadily (runs after the drain test).

The guarantee under test (README, chat): every client ends with every acknowledged
message exactly once, in order. A message whose `pub` was not acknowledged may be
missing, and its sender was told (the publish raised).
"""

from __future__ import annotations

import asyncio
import collections

from stack import Stack

from clients.wwws import Client, ClientError, NotAcknowledged

ROOM = "e2e-kill"
CLIENTS = 6
SECONDS = 8.0


async def test_kill_9_a_replica_mid_conversation_loses_no_acknowledged_message(stack: Stack):
    url = f"{stack.wss}/chat/ws"
    clients = [
        Client(url, stack.token(f"killer{i}"), ssl_context=stack.ssl_context(), backoff_base=0.05)
        for i in range(CLIENTS)
    ]
    for client in clients:
        await client.start()
        await client.subscribe(ROOM)
    by_node = collections.Counter(client.node for client in clients)
    assert len(by_node) >= 2, f"all clients on one replica: {by_node}"
    victim_node = by_node.most_common(1)[0][0]
    victims = [c for c in clients if c.node == victim_node]

    acked: dict[int, str] = {}
    unacked: list[str] = []
    stop = asyncio.Event()

    async def talk(i: int, client: Client) -> None:
        n = 0
        while not stop.is_set():
            text = f"{i}:{n}"
            n += 1
            try:
                acked[await client.publish(ROOM, {"text": text})] = text
            except (NotAcknowledged, ClientError, ConnectionError):
                unacked.append(text)  # the sender knows this one is not guaranteed
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.1)

    talkers = [asyncio.create_task(talk(i, c)) for i, c in enumerate(clients)]
    await asyncio.sleep(2)
    stack.container_for(victim_node).kill()  # SIGKILL: no drain, no close frames
    await asyncio.sleep(SECONDS - 2)
    stop.set()
    await asyncio.gather(*talkers)

    top = max(acked)
    received: dict[Client, list[tuple[int, str]]] = {c: [] for c in clients}
    for _ in range(60):
        for client in clients:
            received[client] += [(o, d["text"]) for _, o, d in client.drain_messages()]
        if all(r and r[-1][0] >= top for r in received.values()):
            break
        await asyncio.sleep(0.5)
    for client in clients:
        await client.close()

    assert len(acked) > 100
    for client in victims:
        assert client.reconnects >= 1 and client.node != victim_node
    for client, got in received.items():
        offsets = [offset for offset, _ in got]
        assert offsets == list(range(1, offsets[-1] + 1)), "gap or duplicate"
        assert offsets[-1] >= top
        texts = dict(got)
        for offset, text in acked.items():
            assert texts[offset] == text
        assert client.gaps == []
