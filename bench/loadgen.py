"""The load generator: picows clients that speak each target's protocol.

Every publication carries its send time inside its text, as ``"@<unix seconds>"``; a
client that receives a frame with that marker counts it as delivered and, while the
stats are recording, keeps the publish->deliver latency. The same client code, the same
parsing and the same measuring serve every target, so the ratios compare servers, not
clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import socket
import ssl
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

__all__ = [
    "Client",
    "Protocol",
    "Stats",
    "connect_many",
    "percentiles",
    "raise_nofile",
]

MARK = b'"@'
Predicate = Callable[[bytes], bool]


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard one; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def stamp() -> str:
    return f"@{time.time():.6f}"


@dataclass
class Stats:
    """Counters shared by a group of clients (e.g. the fast readers, the slow ones)."""

    delivered: int = 0
    recording: bool = False
    latencies: array = field(default_factory=lambda: array("d"))  # seconds
    closes: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    #: when set, every unmarked wwws frame is counted here by its op (b"join", ...)
    ops: Counter[bytes] | None = None

    def start_recording(self) -> None:
        self.latencies = array("d")
        self.recording = True


class Protocol:
    """How to speak to one kind of server (wwws-style JSON frames by default)."""

    name = "wwws"

    def __init__(self, path: str, token: Callable[[int], str] | None = None) -> None:
        self.path = path
        self.token = token

    def url(self, base: str, user: int) -> str:
        if self.token is None:
            return base + self.path
        return f"{base}{self.path}?token={self.token(user)}"

    def ready(self) -> list[tuple[bytes | None, Predicate]]:
        """Steps after the upgrade: (frame to send or None, predicate of the awaited frame)."""
        return [(None, lambda d: b'"hello"' in d)]

    def sub(self, room: str, ident: int) -> tuple[bytes, Predicate]:
        """The frame, and what answers it: ``subscribed`` or an ``error`` with our id."""
        frame = orjson.dumps({"op": "sub", "id": ident, "ch": room})
        token = f'"ch":"{room}"'.encode()
        error_id = f'"id":{ident}'.encode()
        return (
            frame,
            lambda d: (
                (b'"subscribed"' in d and token in d)
                or (d.startswith(b'{"op":"error"') and error_id in d)
            ),
        )

    def pub(self, room: str, text: str, ident: int) -> bytes:
        return self.pub_data(room, {"text": text}, ident)

    def pub_data(self, room: str, data: dict[str, object], ident: int) -> bytes:
        return orjson.dumps({"op": "pub", "id": ident, "ch": room, "data": data})


class SocketIOProtocol(Protocol):
    """Engine.IO 4 / Socket.IO 5 over a WebSocket only: the handshake, ping->pong and
    event packets (``42["event", data]``); enough for join/emit, no polling."""

    name = "socket.io"

    def __init__(self) -> None:
        super().__init__("/socket.io/?EIO=4&transport=websocket")

    def ready(self) -> list[tuple[bytes | None, Predicate]]:
        return [(None, lambda d: d.startswith(b"0{")), (b"40", lambda d: d.startswith(b"40"))]

    def sub(self, room: str, ident: int) -> tuple[bytes, Predicate]:
        frame = b'42["sub",' + orjson.dumps(room) + b"]"
        token = orjson.dumps(room)
        return frame, lambda d: d.startswith(b'42["subscribed"') and token in d

    def pub_data(self, room: str, data: dict[str, object], ident: int) -> bytes:
        return b'42["pub",' + orjson.dumps({"ch": room, "data": data}) + b"]"


class Client(WSListener):  # type: ignore[misc]
    """One connection. Counts marked frames, answers Engine.IO pings, wakes waiters."""

    def __init__(self, protocol: Protocol, stats: Stats) -> None:
        super().__init__()
        self.protocol = protocol
        self.stats = stats
        self.transport: WSTransport | None = None
        self.waiters: list[tuple[Predicate, asyncio.Future[bytes]]] = []
        # control frames nobody waited for yet (e.g. a hello that came with the upgrade)
        self.inbox: list[bytes] = []
        self.disconnected = False
        self.close_code: int | None = None
        self.next_id = 1

    # -- picows callbacks --------------------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT:
            data = frame.get_payload_as_bytes()
            at = data.find(MARK)
            if at >= 0 and b"subscribed" not in data[:24]:  # not a history snapshot
                stats = self.stats
                stats.delivered += 1
                if stats.recording:
                    end = data.find(b'"', at + 2)
                    stats.latencies.append(time.time() - float(data[at + 2 : end]))
                return
            if data == b"2":  # Engine.IO ping
                transport.send(WSMsgType.TEXT, b"3")
                return
            ops = self.stats.ops
            if ops is not None and data.startswith(b'{"op":"'):
                ops[data[7 : data.find(b'"', 7)]] += 1
            for waiter in self.waiters:
                predicate, future = waiter
                if predicate(data):
                    self.waiters.remove(waiter)
                    if not future.done():
                        future.set_result(data)
                    return
            if len(self.inbox) < 16:
                self.inbox.append(data)
        elif kind == WSMsgType.CLOSE:
            self.close_code = frame.get_close_code()
            self.stats.closes[int(self.close_code)] += 1

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.disconnected = True
        for _, future in self.waiters:
            if not future.done():
                future.set_exception(ConnectionError(f"disconnected ({self.close_code})"))
        self.waiters.clear()

    # -- actions ---------------------------------------------------------------------
    def expect(self, predicate: Predicate) -> asyncio.Future[bytes]:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        for data in self.inbox:
            if predicate(data):
                self.inbox.remove(data)
                future.set_result(data)
                return future
        if self.disconnected:
            future.set_exception(ConnectionError("disconnected"))
        else:
            self.waiters.append((predicate, future))
        return future

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.disconnected:
            self.transport.send(WSMsgType.TEXT, data)

    async def handshake(self, wait: float) -> None:
        for frame, predicate in self.protocol.ready():
            future = self.expect(predicate)
            if frame is not None:
                self.send(frame)
            await asyncio.wait_for(future, wait)

    async def subscribe(self, room: str, wait: float, attempts: int = 6) -> None:
        """Subscribe; an ``unavailable`` error is retried with backoff, as the protocol
        asks clients to (each retry is counted in ``stats.errors``)."""
        for attempt in range(attempts):
            frame, predicate = self.protocol.sub(room, self.next_id)
            self.next_id += 1
            future = self.expect(predicate)
            self.send(frame)
            reply = await asyncio.wait_for(future, wait)
            if not reply.startswith(b'{"op":"error"'):
                return
            code = orjson.loads(reply).get("code", "error")
            self.stats.errors[f"sub_{code}"] += 1
            if code != "unavailable" or attempt == attempts - 1:
                raise RuntimeError(f"sub refused: {reply[:200]!r}")
            await asyncio.sleep(0.05 * 2**attempt * random.random())

    def publish(self, room: str, text: str, extra: dict[str, object] | None = None) -> None:
        data: dict[str, object] = {"text": text, **(extra or {})}
        self.send(self.protocol.pub_data(room, data, self.next_id))
        self.next_id += 1

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.underlying_transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.disconnected:
            self.transport.underlying_transport.resume_reading()

    async def close(self, wait: float = 2.0) -> None:
        if self.transport is None or self.disconnected:
            return
        with contextlib.suppress(Exception):
            self.transport.send_close(WSCloseCode.OK)  # picows defaults to code 0, a protocol error
            await asyncio.wait_for(self.transport.wait_disconnected(), wait)
        if not self.disconnected:
            self.transport.disconnect()


async def open_client(
    base: str,
    protocol: Protocol,
    stats: Stats,
    user: int,
    rooms: Sequence[str] = (),
    ssl_context: ssl.SSLContext | None = None,
    wait: float = 10.0,
    rcvbuf: int | None = None,
) -> Client:
    """Connect, finish the protocol's handshake, subscribe to ``rooms`` one by one."""
    kwargs: dict[str, object] = {}
    if rcvbuf is not None:
        kwargs["socket_factory"] = _small_buffer_socket_async(rcvbuf)
    _, client = await ws_connect(
        lambda: Client(protocol, stats),
        protocol.url(base, user),
        ssl_context=ssl_context,
        websocket_handshake_timeout=wait,
        **kwargs,
    )
    try:
        await client.handshake(wait)
        for room in rooms:
            await client.subscribe(room, wait)
    except BaseException:
        if client.transport is not None:
            client.transport.disconnect()
        raise
    return client


def _small_buffer_socket_async(rcvbuf: int) -> Callable[[object], object]:
    async def factory(parsed: object) -> socket.socket:
        host = getattr(parsed, "host", "127.0.0.1")
        port = int(getattr(parsed, "port", 0))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        return sock

    return factory


@dataclass
class ConnectResult:
    clients: list[Client]
    seconds: float
    failures: Counter[str]
    retries: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return len(self.clients) / self.seconds if self.seconds > 0 else 0.0


async def connect_many(
    base: str,
    protocol: Protocol,
    stats: Stats,
    count: int,
    rooms_for: Callable[[int], Sequence[str]],
    ssl_context: ssl.SSLContext | None = None,
    concurrency: int = 100,
    deadline: float = 120.0,
    user_offset: int = 0,
    rcvbuf: int | None = None,
) -> ConnectResult:
    """Open ``count`` clients, ``concurrency`` handshakes at a time, within ``deadline`` s.
    Failures are counted by error type, not raised; the caller decides what is enough."""
    clients: list[Client] = []
    failures: Counter[str] = Counter()
    gate = asyncio.Semaphore(concurrency)
    start = time.perf_counter()
    stop_at = time.monotonic() + deadline

    async def one(index: int) -> None:
        async with gate:
            if time.monotonic() > stop_at:
                failures["deadline"] += 1
                return
            try:
                client = await open_client(
                    base,
                    protocol,
                    stats,
                    user_offset + index,
                    rooms_for(index),
                    ssl_context,
                    rcvbuf=rcvbuf,
                )
            except Exception as error:
                failures[type(error).__name__] += 1
                return
            clients.append(client)

    await asyncio.gather(*(one(i) for i in range(count)))
    return ConnectResult(clients, time.perf_counter() - start, failures, dict(stats.errors))


async def close_all(clients: Sequence[Client], concurrency: int = 500, abort: bool = False) -> None:
    """Close with a close handshake, or (``abort``) just drop the TCP connections."""
    if abort:
        for client in clients:
            if client.transport is not None and not client.disconnected:
                client.transport.disconnect()
        await asyncio.sleep(0.2)
        return
    gate = asyncio.Semaphore(concurrency)

    async def one(client: Client) -> None:
        async with gate:
            await client.close()

    await asyncio.gather(*(one(c) for c in clients))


def percentiles(
    samples: Sequence[float], points: Sequence[float] = (50, 90, 99)
) -> dict[str, float]:
    """Percentiles in milliseconds (nearest rank), plus max and count."""
    if not samples:
        return {"count": 0}
    ordered = sorted(samples)
    n = len(ordered)
    out: dict[str, float] = {"count": n}
    for p in points:
        rank = min(n - 1, max(0, round(p / 100 * n + 0.5) - 1))
        out[f"p{p:g}"] = ordered[rank] * 1000
    out["max"] = ordered[-1] * 1000
    return out
