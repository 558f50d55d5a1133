"""The users of every service, working through a fault, and what they saw.

Each flow uses the shipped Python client (clients/wwws.py) the way a user would,
keeps what was acknowledged to it, and at the end lists its problems (empty: the
guarantee held):

- chat: talkers publish into one room; every acknowledged message reaches every talker
  once, in one order, each sender's messages in the order they were acknowledged;
- ticker: a backend notifies investors through the publish API while they follow a price;
  every acknowledged notification reaches its investor once, in order, and prices flow;
- telephony: a watcher watches a caller and a callee who are in a call; presence is
  right again afterwards, and the call still carries signals, never ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import aiohttp
from helpers import eventually
from stack import Stack

from clients.wwws import Client, ClientError, NotAcknowledged, Stopped

__all__ = ["CallFlow", "ChatFlow", "Connect", "Flow", "TickerFlow", "order_problems"]

Connect = Callable[[str, str], Client]

CHAT_TALKERS = 4
CHAT_PAUSE = 0.2  # each talker: 5 messages/s
INVESTORS = 2
NOTIFY_PAUSE = 0.125  # 8 notifications/s per investor, as in issue 12
SIGNAL_PAUSE = 0.25
REPLY_TIMEOUT = 5.0


class Flow:
    """One service's users: started, working until told to stop, then checked."""

    service = ""

    def __init__(self) -> None:
        self.clients: dict[str, Client] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for client in self.clients.values():
            await client.start()

    async def work(self, stop: asyncio.Event) -> None:
        raise NotImplementedError

    def collect(self) -> None:
        """Take what the clients received so far."""

    def delivered(self) -> bool:
        """Every acknowledged item has reached its recipients (positive condition)."""
        return True

    async def problems(self) -> dict[str, list[str]]:
        raise NotImplementedError

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in self.clients.values():
            await client.close()


def order_problems(who: str, received: list[Any], sent_in_order: list[Any]) -> list[str]:
    """``received`` holds each of ``sent_in_order`` once, in that order."""
    problems = []
    duplicates = len(received) - len(set(received))
    if duplicates:
        problems.append(f"{who}: {duplicates} received twice")
    seen = set(received)
    missing = [item for item in sent_in_order if item not in seen]
    if missing:
        problems.append(f"{who}: {len(missing)} acknowledged never arrived: {missing[:10]}")
    position = {item: i for i, item in enumerate(received)}
    indexes = [position[item] for item in sent_in_order if item in position]
    if indexes != sorted(indexes):
        problems.append(f"{who}: acknowledged items arrived out of order")
    return problems


class ChatFlow(Flow):
    service = "chat"

    def __init__(self, connect: Connect, tag: str) -> None:
        super().__init__()
        self.room = f"faults-{tag}"
        self.clients = {
            f"{tag}-talker{i}": connect("chat", f"{tag}-talker{i}") for i in range(CHAT_TALKERS)
        }
        self.acked: dict[str, list[str]] = {name: [] for name in self.clients}
        self.unacked = 0
        self.received: dict[str, list[str]] = {name: [] for name in self.clients}

    async def start(self) -> None:
        await super().start()
        for client in self.clients.values():
            await client.subscribe(self.room)

    async def work(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._talk(name, stop) for name in self.clients))

    async def _talk(self, name: str, stop: asyncio.Event) -> None:
        client = self.clients[name]
        n = 0
        while not stop.is_set():
            text = f"{name}:{n}"
            n += 1
            try:
                await asyncio.wait_for(client.publish(self.room, {"text": text}), REPLY_TIMEOUT)
                self.acked[name].append(text)
            except (NotAcknowledged, ClientError, ConnectionError, TimeoutError):
                self.unacked += 1  # the sender was told; it may or may not be stored
            await asyncio.sleep(CHAT_PAUSE)

    def collect(self) -> None:
        for name, client in self.clients.items():
            self.received[name] += [
                data["text"] for channel, _, data in client.drain_messages() if channel == self.room
            ]

    def delivered(self) -> bool:
        self.collect()
        every = {text for texts in self.acked.values() for text in texts}
        return all(every <= set(got) for got in self.received.values())

    async def problems(self) -> dict[str, list[str]]:
        problems: list[str] = []
        if sum(map(len, self.acked.values())) < 20:
            problems.append(f"too few acknowledged messages to say anything: {self.acked}")
        for reader, got in self.received.items():
            for sender, sent in self.acked.items():
                problems += order_problems(f"{reader} <- {sender}", got, sent)
        orders = {tuple(got) for got in self.received.values()}
        if len(orders) > 1:
            problems.append("talkers saw the room in different orders")
        return {"chat": problems}


class TickerFlow(Flow):
    service = "ticker"
    symbol = "AAPL"

    def __init__(self, connect: Connect, tag: str, stack: Stack, http: aiohttp.ClientSession):
        super().__init__()
        self.clients = {
            f"{tag}-investor{i}": connect("ticker", f"{tag}-investor{i}") for i in range(INVESTORS)
        }
        self._stack = stack
        self._http = http
        self.acked: dict[str, list[int]] = {name: [] for name in self.clients}
        self.unacked = 0
        self.received: dict[str, list[int]] = {name: [] for name in self.clients}
        self.prices: dict[str, list[int]] = {name: [] for name in self.clients}

    async def start(self) -> None:
        await super().start()
        for client in self.clients.values():
            await client.subscribe(self.symbol)

    async def work(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._notify(name, stop) for name in self.clients))

    async def _notify(self, user: str, stop: asyncio.Event) -> None:
        n = 0
        url = f"{self._stack.base}/ticker/api/publish"
        headers = {"Authorization": f"Bearer {self._stack.api_key}"}
        while not stop.is_set():
            try:
                async with self._http.post(
                    url,
                    json={"user": user, "data": {"n": n}},
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=REPLY_TIMEOUT),
                ) as response:
                    if response.status == 200:
                        self.acked[user].append(n)
                    else:
                        self.unacked += 1
            except (aiohttp.ClientError, TimeoutError):
                self.unacked += 1
            n += 1
            await asyncio.sleep(NOTIFY_PAUSE)

    def collect(self) -> None:
        for name, client in self.clients.items():
            for channel, offset, data in client.drain_messages():
                if channel == f"user:{name}":
                    self.received[name].append(data["n"])
                elif channel == self.symbol:
                    self.prices[name].append(offset)

    def price_counts(self) -> dict[str, int]:
        self.collect()
        return {name: len(offsets) for name, offsets in self.prices.items()}

    def delivered(self) -> bool:
        self.collect()
        return all(set(self.acked[name]) <= set(got) for name, got in self.received.items())

    async def problems(self) -> dict[str, list[str]]:
        problems: list[str] = []
        if sum(map(len, self.acked.values())) < 20:
            problems.append(f"too few acknowledged notifications: {self.acked}")
        for name, got in self.received.items():
            # A gap the client was told about (recovered: false) is allowed where the
            # fault destroys history (Redis lost its data); a lost acknowledged one is not.
            problems += order_problems(name, got, self.acked[name])
        return {"ticker": problems}


class CallFlow(Flow):
    service = "telephony"

    def __init__(self, connect: Connect, tag: str) -> None:
        super().__init__()
        self.caller, self.callee, self.watcher = (
            f"{tag}-caller",
            f"{tag}-callee",
            f"{tag}-watcher",
        )
        self.clients = {name: connect("telephony", name) for name in (*self.parties, self.watcher)}
        self.events: dict[str, list[dict[str, Any]]] = {name: [] for name in self.clients}
        self.call_id = ""
        self._signals = 0
        #: set by the runner: False when the fault destroys the backplane's state
        self.state_kept = True

    @property
    def parties(self) -> tuple[str, str]:
        return (self.caller, self.callee)

    async def start(self) -> None:
        await super().start()
        for name, client in self.clients.items():
            self._tasks.append(asyncio.create_task(self._record(name, client)))
        watched = await self.clients[self.watcher].watch(list(self.parties))
        assert watched == dict.fromkeys(self.parties, "online"), watched
        ringing = await self.clients[self.caller].request({"op": "call", "to": self.callee})
        assert ringing["op"] == "ringing", ringing
        self.call_id = ringing["call_id"]
        await eventually(lambda: self._got(self.callee, "incoming"), what="incoming call")
        await self.clients[self.callee].send({"op": "answer", "call_id": self.call_id})
        await eventually(lambda: self._got(self.caller, "answered"), what="call answered")

    async def _record(self, name: str, client: Client) -> None:
        with contextlib.suppress(Stopped):  # closed at the end of the run
            while True:
                with contextlib.suppress(TimeoutError):
                    self.events[name].append(await client.next_event(within=60))

    def _got(self, name: str, op: str, **fields: Any) -> bool:
        return any(
            event["op"] == op and all(event.get(k) == v for k, v in fields.items())
            for event in self.events[name]
        )

    async def signal(self) -> int:
        self._signals += 1
        frame = {"op": "signal", "call_id": self.call_id, "data": {"seq": self._signals}}
        await self.clients[self.caller].send(frame)
        return self._signals

    async def work(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.signal()
            await asyncio.sleep(SIGNAL_PAUSE)

    async def problems(self) -> dict[str, list[str]]:
        call = await self.call_problems() if self.state_kept else await self.lost_call_problems()
        return {"presence": await self.presence_problems(), "call": call}

    async def lost_call_problems(self) -> list[str]:
        """The call's state is gone with Redis's data: the caller is told so when it
        signals (``not_found``), rather than talking into the void."""

        async def told() -> bool:
            await self.signal()
            await asyncio.sleep(SIGNAL_PAUSE)
            return self._got(self.caller, "error", code="not_found") or self._got(
                self.caller, "ended"
            )

        try:
            await eventually(told, timeout=10, what="the caller told the call is gone")
        except AssertionError as error:
            return [str(error)]
        return []

    async def call_problems(self) -> list[str]:
        """After the fault: a new signal still reaches the callee, and nobody heard the
        call end or fail."""

        async def relayed() -> bool:
            seq = await self.signal()
            await asyncio.sleep(SIGNAL_PAUSE)
            return self._got(self.callee, "signal", data={"seq": seq})

        problems = []
        try:
            await eventually(relayed, timeout=10, what="a signal through the call")
        except AssertionError as error:
            problems.append(f"the call carries no signal after the fault: {error}")
        for name in self.parties:
            trouble = [e for e in self.events[name] if _breaks_the_call(e)]
            if trouble:
                problems.append(f"{name} heard: {trouble[:3]}")
        return problems

    async def presence_problems(self) -> list[str]:
        expected = dict.fromkeys(self.parties, "online")
        watcher = self.clients[self.watcher]
        try:
            await eventually(
                lambda: watcher.presence == expected, timeout=10, what="both parties online"
            )
        except AssertionError:
            return [f"the watcher sees {watcher.presence}, not {expected}"]
        return []


def _breaks_the_call(event: dict[str, Any]) -> bool:
    """``unavailable`` while the backplane is away says "try again": the call lives on."""
    if event["op"] == "error":
        return event.get("code") != "unavailable"
    return event["op"] in ("ended", "missed")
