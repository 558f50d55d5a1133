"""A room of chat clients (the shipped Python client) talking through the real stack
while something happens to it, and the check of the chat guarantee afterwards: every
acknowledged message reached every client once, in order, with no gap."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
from helpers import receive_op
from stack import Stack

from clients.wwws import Client, ClientError, NotAcknowledged

PAUSE = 0.1  # between one client's publications


class ChatRoom:
    def __init__(self, stack: Stack, room: str, users: list[str], pause: float = PAUSE) -> None:
        url = f"{stack.wss}/chat/ws"
        context = stack.ssl_context()
        self.room = room
        self.clients = [
            Client(url, stack.token(user), ssl_context=context, backoff_base=0.05) for user in users
        ]
        self.acked: dict[int, str] = {}
        #: (sent, acknowledged) times of each acknowledged publication (time.monotonic)
        self.ack_times: list[tuple[float, float]] = []
        self.unacked: list[str] = []  # each sender knows these are not guaranteed
        self.pause = pause
        self._stop = asyncio.Event()

    @classmethod
    def across(
        cls, stacks: Sequence[Any], room: str, users: list[str], pause: float = PAUSE
    ) -> ChatRoom:
        """Users spread round-robin over several front doors (a cluster's Traefiks)."""
        rooms = [cls(stacks[i % len(stacks)], room, [user], pause) for i, user in enumerate(users)]
        joined = rooms[0]
        joined.clients = [client for one in rooms for client in one.clients]
        return joined

    async def join(self) -> None:
        for client in self.clients:
            await client.start()
            await client.subscribe(self.room)

    @contextlib.asynccontextmanager
    async def talking(self) -> AsyncIterator[None]:
        """Every client publishes in turn for as long as the block runs."""
        talkers = [asyncio.create_task(self._talk(i, c)) for i, c in enumerate(self.clients)]
        try:
            yield
        finally:
            self._stop.set()
            await asyncio.gather(*talkers)

    async def _talk(self, i: int, client: Client) -> None:
        n = 0
        while not self._stop.is_set():
            text = f"{i}:{n}"
            n += 1
            sent = time.monotonic()
            try:
                self.acked[await client.publish(self.room, {"text": text})] = text
                self.ack_times.append((sent, time.monotonic()))
            except (NotAcknowledged, ClientError, ConnectionError):
                self.unacked.append(text)
                await asyncio.sleep(self.pause)
            await asyncio.sleep(self.pause)

    async def check_every_acknowledged_message_once_in_order(self) -> None:
        top = max(self.acked)
        received: dict[Client, list[tuple[int, str]]] = {c: [] for c in self.clients}
        for _ in range(60):
            for client in self.clients:
                received[client] += [(o, d["text"]) for _, o, d in client.drain_messages()]
            if all(r and r[-1][0] >= top for r in received.values()):
                break
            await asyncio.sleep(0.5)
        assert len(self.acked) > 100, f"only {len(self.acked)} acknowledged"
        for client, got in received.items():
            offsets = [offset for offset, _ in got]
            if offsets != list(range(1, offsets[-1] + 1)):
                seen = set(offsets)
                missing = sorted(set(range(1, offsets[-1] + 1)) - seen)
                twice = sorted(o for o in seen if offsets.count(o) > 1)
                raise AssertionError(
                    f"gap or duplicate for {client.node}: missing {missing[:20]},"
                    f" twice {twice[:20]}, {len(offsets)} received up to {offsets[-1]}"
                )
            assert offsets[-1] >= top, (
                f"{client.node} received up to {offsets[-1]} of {top} acknowledged"
                f" ({client.reconnects} reconnects)"
            )
            texts = dict(got)
            for offset, text in self.acked.items():
                assert texts[offset] == text
            assert client.gaps == [], (
                f"{client.node} announced gaps (channel, seen, top): {client.gaps}"
            )

    async def leave(self) -> None:
        for client in self.clients:
            await client.close()


class Newcomers:
    """New users arriving over and over while something happens to the stack: each one
    a handshake, a `sub` to ``room`` and a close. Counts the attempts and the failures."""

    def __init__(self, stack: Any, room: str, pause: float = 0.05) -> None:
        self.stack = stack
        self.room = room
        self.pause = pause
        self.attempts = 0
        self.failures = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._arrive())

    async def stop(self) -> None:
        """Stop arriving (idempotent) and wait for the last one."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _arrive(self) -> None:
        async with self.stack.session() as session:
            while not self._stop.is_set():
                self.attempts += 1
                try:
                    ws, _ = await self.stack.connect(session, "chat", "newcomer")
                    await ws.send_json({"op": "sub", "id": 1, "ch": self.room})
                    await receive_op(ws, "subscribed")
                    await ws.close()
                except (aiohttp.ClientError, AssertionError, TimeoutError):
                    self.failures += 1
                await asyncio.sleep(self.pause)
