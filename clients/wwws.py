"""A Python client for wwws: reconnects by the close-code policy and resumes with `since`.

    async with Client("wss://localhost/chat/ws", token) as client:
        await client.subscribe("lobby")
        await client.publish("lobby", {"text": "hi"})
        async for channel, offset, data in client.messages():
            ...

What it guarantees: for every subscribed channel it hands out each publication once, in
offset order, across reconnects (it resubscribes with the last epoch and offset it saw).
That includes the channels the server subscribes on its own (ticker's ``user:<id>``):
they are resumed with ``since`` like the others. When the server answers
``recovered: false`` (the gap left the history window, or the stream's epoch changed) the
gap is recorded in :attr:`Client.gaps`, never hidden. Every ``publish`` carries an idempotency
key, so sending it again is safe (``retry_for`` lets the client do it across reconnects);
one whose ``ack`` never arrived raises :class:`NotAcknowledged`: the message may or may
not have been stored, and the caller may send it again with the same key. Telephony's
watched users are watched again after a reconnect, and :attr:`Client.presence` keeps
their last known status.

Tokens: with ``token_provider`` (an async function returning a fresh token) the client
answers the server's ``refresh`` notice with a new token over the socket, after a close
with **4010** (token expired) it reconnects at once with a new one and resumes, and a
handshake refused with HTTP 401 (a token that expired while the client was away) is
retried with a new one.
Without it, 4010 stops the client like any 40xx code, and so does a 401: the same token
would be refused again. **4011** (revoked) and a handshake refused with **403** (origin)
always stop it. A stopped client raises :class:`Stopped` from ``start``, ``request`` and
everything built on it, and from ``next_message`` and ``next_event`` once what it received
is handed out: it never waits for a connection that will not come.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import aiohttp

__all__ = ["Client", "ClientError", "NotAcknowledged", "Stopped"]

log = logging.getLogger(__name__)
T = TypeVar("T")

RECONNECT_AT_ONCE = {1001, 1012}
TOKEN_EXPIRED = 4010
DO_NOT_RECONNECT = range(4000, 4100)
#: handshake refusals that the same request would meet again (401 only without a new token)
REFUSED_FOR_GOOD = {401, 403}
ENDED = {
    aiohttp.WSMsgType.CLOSE,
    aiohttp.WSMsgType.CLOSING,
    aiohttp.WSMsgType.CLOSED,
    aiohttp.WSMsgType.ERROR,
}


class ClientError(Exception):
    """An ``error`` frame in reply to a request."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.code = frame.get("code")
        self.frame = frame


class NotAcknowledged(Exception):
    """The connection was lost before the server acknowledged a publication."""


class Stopped(Exception):
    """The client stopped and will not reconnect: the server closed with a 40xx code
    (``close_code``), refused the handshake for good (``status``: 401 with no new token,
    403), or the client was closed (neither)."""

    def __init__(self, close_code: int | None, status: int | None) -> None:
        if close_code is not None:
            why = f"the server closed with {close_code}"
        elif status is not None:
            why = f"the server refused the handshake with {status}"
        else:
            why = "it was closed"
        super().__init__(f"the client stopped: {why}")
        self.close_code = close_code
        self.status = status


@dataclass
class _Position:
    epoch: str | None = None
    offset: int = 0


@dataclass
class _State:
    positions: dict[str, _Position] = field(default_factory=dict)
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)


class Client:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
        reply_timeout: float = 10.0,
        heartbeat: float | None = None,
        token_provider: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self._token_provider = token_provider
        #: tokens sent over the socket in answer to the server's ``refresh`` notice
        self.token_refreshes = 0
        self.node: str | None = None
        self.reconnects = 0
        #: time.monotonic() when the client was last live (see :attr:`live`)
        self.live_since: float | None = None
        #: seconds each lost connection left the client not live (until resubscribed)
        self.outages: list[float] = []
        self._lost_at: float | None = None
        self.gaps: list[tuple[str, int, int]] = []  # (channel, last seen, resumed at)
        #: the close code of every connection that ended (1006: it dropped with no close frame)
        self.close_codes: list[int] = []
        #: channels the server refused to resubscribe after a reconnect: (channel, error code)
        self.dropped: list[tuple[str, str]] = []
        #: telephony: the last status heard of each watched user
        self.presence: dict[str, str] = {}
        self._ssl = ssl_context
        self._backoff = (backoff_base, backoff_cap)
        self._reply_timeout = reply_timeout
        # A connection whose far end vanished (a replica cut off from the network) sends
        # no close frame; only silence reveals it. By default the client follows the
        # server's heartbeat: the server pings every `interval` (hello, `heartbeat`) and
        # 2 x interval + 5 s without any frame or ping means the connection is dead. A
        # number here makes the client ping on its own every that many seconds instead
        # (quicker to notice, at the cost of the client polling).
        self._heartbeat = heartbeat
        #: the server's ping interval as last announced (hello / `heartbeat`)
        self.heartbeat_interval: float | None = None
        #: connections given up because the server fell silent past 2 x interval + 5 s
        self.silent_drops = 0
        # channels resubscribed on this connection whose reply has not come yet
        self._resuming: set[str] = set()
        self._watched: set[str] = set()
        self._ids = itertools.count(1)
        self._state = _State()
        self._inbox: asyncio.Queue[tuple[str, int, Any]] = asyncio.Queue()
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._connected = asyncio.Event()
        self._live = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._closed = False
        #: the 40xx close code that stopped the client
        self.stopped_with: int | None = None
        #: the HTTP status of the handshake refusal that stopped the client (401, 403)
        self.refused_with: int | None = None
        self._stopped = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------
    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect; :class:`Stopped` or TimeoutError (30 s) leave nothing open behind."""
        connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True)
        self._session = aiohttp.ClientSession(connector=connector)
        self._runner = asyncio.create_task(self._run(), name="wwws-client")
        try:
            await self.wait_connected()
        except BaseException:
            await self.close()
            raise

    async def wait_connected(self, within: float = 30.0) -> None:
        """Until connected; :class:`Stopped` at once if the client stopped instead."""
        await asyncio.wait_for(self._until_connected(), within)

    async def _until_connected(self) -> None:
        if not self._connected.is_set():
            await self._unless_stopped(self._connected.wait())

    async def _unless_stopped(self, waiting: Awaitable[T]) -> T:
        """What ``waiting`` gives; :class:`Stopped` as soon as the client stops instead
        (at once when it has stopped already)."""
        task = asyncio.ensure_future(waiting)
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
        finally:
            stopped.cancel()
            task.cancel()  # a no-op once it is done
        raise Stopped(self.stopped_with, self.refused_with)

    @property
    def live(self) -> bool:
        """Connected, with every subscription and watch of before restored."""
        return self._live.is_set()

    async def wait_live(self, within: float = 30.0) -> None:
        await asyncio.wait_for(self._live.wait(), within)

    async def close(self) -> None:
        self._closed = True
        self._stopped.set()
        if self._refreshing is not None:
            self._refreshing.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._session is not None:
            await self._session.close()

    # -- requests -------------------------------------------------------------------
    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        await self._until_connected()
        ws = self._ws
        assert ws is not None
        frame_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._state.pending[frame_id] = future
        try:
            await ws.send_json({**frame, "id": frame_id})
            reply = await asyncio.wait_for(future, self._reply_timeout)
        except (ConnectionError, aiohttp.ClientError, TimeoutError) as error:
            raise NotAcknowledged(str(error)) from error
        finally:
            self._state.pending.pop(frame_id, None)
        if reply["op"] == "error":
            raise ClientError(reply)
        return reply

    async def send(self, frame: dict[str, Any]) -> bool:
        """Send a frame that has no reply when it succeeds (telephony's ``answer``,
        ``signal``); an ``error`` about it arrives as an event. False: not connected."""
        ws = self._ws
        if ws is None or not self._connected.is_set():
            return False
        try:
            await ws.send_json(frame)
        except (ConnectionError, aiohttp.ClientError):
            return False
        return True

    async def subscribe(self, channel: str) -> dict[str, Any]:
        position = self._state.positions.setdefault(channel, _Position())
        return await self._subscribe(channel, position)

    async def publish(self, channel: str, data: dict[str, Any], *, retry_for: float = 0.0) -> int:
        """Return the publication's offset once acknowledged.

        Every publication carries an idempotency key (``idem``), so sending it again is
        safe: the server stores it once and a retry is answered with the first offset.
        With ``retry_for`` > 0 the client itself sends it again (on its next connection)
        while the ack is missing or the answer is ``unavailable``, for up to that many
        seconds; then, or with 0, :class:`NotAcknowledged` / :class:`ClientError` tell the
        caller, who may retry with :meth:`publish_again` and the same key.
        """
        return await self.publish_again(channel, data, secrets.token_hex(12), retry_for)

    async def publish_again(
        self, channel: str, data: dict[str, Any], idem: str, retry_for: float = 0.0
    ) -> int:
        """:meth:`publish` with the caller's own idempotency key (1-64 characters)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry_for
        frame = {"op": "pub", "ch": channel, "data": data, "idem": idem}
        while True:
            try:
                reply = await self.request(frame)
                return int(reply["offset"])
            except (NotAcknowledged, ClientError) as error:
                retriable = isinstance(error, NotAcknowledged) or error.code == "unavailable"
                if not retriable or loop.time() >= deadline:
                    raise
            await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))

    async def watch(self, users: list[str]) -> dict[str, str]:
        """Telephony: hear ``presence`` of ``users`` (again after every reconnect)."""
        self._watched.update(users)
        return await self._watch(users)

    async def messages(self) -> AsyncIterator[tuple[str, int, Any]]:
        """Every ``msg`` as (channel, offset, data); ends once the client has stopped and
        every message it received has been handed out."""
        while True:
            try:
                yield await self._next_message()
            except Stopped:
                return

    async def next_message(self, within: float = 10.0) -> tuple[str, int, Any]:
        """The next ``msg`` as (channel, offset, data); TimeoutError after ``within`` s,
        :class:`Stopped` when there is none and the client has stopped."""
        return await asyncio.wait_for(self._next_message(), within)

    async def _next_message(self) -> tuple[str, int, Any]:
        return await self._next_of(self._inbox)

    async def _next_of(self, queue: asyncio.Queue[T]) -> T:
        """What ``queue`` holds next; :class:`Stopped` when it is empty and stays so
        because the client stopped."""
        if not queue.empty():
            return queue.get_nowait()
        return await self._unless_stopped(queue.get())

    def drain_messages(self) -> list[tuple[str, int, Any]]:
        items = []
        while not self._inbox.empty():
            items.append(self._inbox.get_nowait())
        return items

    async def next_event(self, within: float = 10.0) -> dict[str, Any]:
        """The next frame that is neither a reply nor a ``msg`` (join, presence, ...);
        TimeoutError after ``within`` s, :class:`Stopped` when there is none and the
        client has stopped."""
        return await asyncio.wait_for(self._next_of(self._events), within)

    # -- internals ------------------------------------------------------------------
    async def _watch(self, users: list[str]) -> dict[str, str]:
        reply = await self.request({"op": "watch", "users": users})
        state: dict[str, str] = reply["users"]
        return state

    async def _restore(self) -> None:
        """Resubscribe (with ``since``) and watch again what the last connection had."""
        for channel, position in list(self._state.positions.items()):
            try:
                await self._subscribe(channel, position)
            except ClientError as error:
                self._resuming.discard(channel)
                if error.code == "unavailable":
                    raise  # the backplane is away: reconnect with backoff, try again
                # refused for good (e.g. forbidden now): say so, and keep the connection
                log.warning("resubscribing %s refused: %s", channel, error)
                self.dropped.append((channel, str(error.code)))
                del self._state.positions[channel]
        if self._watched:
            await self._watch(sorted(self._watched))

    async def _subscribe(self, channel: str, position: _Position) -> dict[str, Any]:
        frame: dict[str, Any] = {"op": "sub", "ch": channel}
        if position.epoch is not None:
            frame["since"] = {"epoch": position.epoch, "offset": position.offset}
        return await self.request(frame)

    def _apply_subscribed(self, frame: dict[str, Any]) -> None:
        """Runs in the reader, before any later ``msg`` of the channel is looked at."""
        channel = frame["ch"]
        position = self._state.positions.setdefault(channel, _Position())
        if position.epoch is not None and not frame["recovered"]:
            self.gaps.append((channel, position.offset, frame["offset"]))
            # A new stream: its offsets start again. Seen by the epoch, or, where we only
            # know the empty epoch "" (the channel had no stream when we subscribed), by
            # a top below what we have seen, which one stream never does.
            if frame["epoch"] != position.epoch or frame["offset"] < position.offset:
                position.offset = 0
        position.epoch = frame["epoch"]
        for item in frame["publications"]:
            self._accept(item)
        position.offset = max(position.offset, frame["offset"])

    def _accept(self, frame: dict[str, Any]) -> None:
        position = self._state.positions.get(frame["ch"])
        if position is None:
            return
        offset = frame["offset"]
        if offset <= position.offset and position.epoch is not None:
            return  # seen already (a resume overlaps what arrived live)
        position.offset = offset
        self._inbox.put_nowait((frame["ch"], offset, frame["data"]))

    async def _run(self) -> None:
        attempt = 0
        assert self._session is not None
        while not self._closed:
            code: int | None = None
            try:
                self._ws = await self._session.ws_connect(
                    self.url,
                    params={"token": self.token},
                    heartbeat=self._heartbeat,
                    # following the server: the reader sees its pings (and answers them)
                    autoping=self._heartbeat is not None,
                )
            except aiohttp.WSServerHandshakeError as error:
                log.debug("handshake refused: %s", error)
                # A 401: the token expired (or was refused) before this connect, as for a
                # client back from sleep or after an outage longer than its token's life.
                # A provider gives a fresh one for the next attempt (after the backoff,
                # should it keep giving bad ones); the same token would be refused forever.
                renewed = error.status == 401 and await self._new_token()
                if error.status in REFUSED_FOR_GOOD and not renewed:
                    log.warning("handshake refused with %s: the client stops", error.status)
                    self.refused_with = error.status
                    self._stopped.set()
                    return
            except (aiohttp.ClientError, OSError) as error:
                log.debug("connect failed: %s", error)
            else:
                attempt = 0
                code = await self._serve(self._ws)
                self.close_codes.append(int(code) if code is not None else 1006)
                if code == TOKEN_EXPIRED and await self._new_token():
                    self.reconnects += 1
                    continue  # at once, with the new token
                if code is not None and code in DO_NOT_RECONNECT:
                    self.stopped_with = code
                    self._stopped.set()
                    return
            if self._closed:
                return
            self.reconnects += 1
            if code in RECONNECT_AT_ONCE:
                continue
            attempt += 1
            base, cap = self._backoff
            await asyncio.sleep(random.uniform(0, min(cap, base * 2**attempt)))

    async def _new_token(self) -> bool:
        """Ask the token provider for a fresh token; False when there is none."""
        if self._token_provider is None:
            return False
        try:
            self.token = await self._token_provider()
        except Exception as error:  # the provider is the application's: report, stop
            log.warning("token provider failed: %s", error)
            return False
        return True

    async def _refresh(self) -> None:
        """Answer the server's ``refresh`` notice with a new token over the socket."""
        if not await self._new_token():
            return
        try:
            await self.request({"op": "refresh", "token": self.token})
            self.token_refreshes += 1
        except (NotAcknowledged, ClientError) as error:
            # the server closes with 4010 at exp, and the reconnect uses the new token
            log.warning("token refresh refused: %s", error)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> int | None:
        self._hello: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        # Before the first frame is read: an automatic subscription's unsolicited reply
        # may follow `hello` at once, and must not move a position we resume from.
        self._resuming = set(self._state.positions)
        self._server_close_code: int | None = None
        reader = asyncio.create_task(self._read(ws))
        try:
            hello = await asyncio.wait_for(self._hello, self._reply_timeout)
            self.node = hello["node"]
            self._connected.set()
            await self._restore()
            self.live_since = time.monotonic()
            if self._lost_at is not None:
                self.outages.append(self.live_since - self._lost_at)
                self._lost_at = None
            self._live.set()
            await reader
        except (NotAcknowledged, TimeoutError, ClientError, ConnectionError):
            pass
        finally:
            if self._live.is_set():
                self._lost_at = time.monotonic()
            self._live.clear()
            self._connected.clear()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._fail_waiters()
            if not ws.closed:  # we gave up on it (a reply timed out): do not leave it open
                await ws.close()
        return self._server_close_code if self._server_close_code is not None else ws.close_code

    def _fail_waiters(self) -> None:
        """The connection is gone: whoever waits for a reply on it hears so now."""
        lost = ConnectionError("connection lost")
        if not self._hello.done():
            self._hello.set_exception(lost)
        for future in self._state.pending.values():
            if not future.done():
                future.set_exception(lost)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            await self._read_frames(ws)
        finally:
            self._fail_waiters()

    def _silence_limit(self) -> float | None:
        if self._heartbeat is not None or self.heartbeat_interval is None:
            return None
        return 2 * self.heartbeat_interval + 5.0

    async def _read_frames(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            try:
                message = await ws.receive(timeout=self._silence_limit())
            except TimeoutError:
                self.silent_drops += 1
                log.info("no frame or ping for %ss: reconnecting", self._silence_limit())
                await ws.close()
                return
            if message.type is aiohttp.WSMsgType.PING:
                await ws.pong(message.data)
                continue
            if message.type is aiohttp.WSMsgType.PONG:
                continue
            if message.type is aiohttp.WSMsgType.CLOSE:
                # The server's own code: aiohttp's ws.close_code may say 1006 when the
                # server closed the socket right after its close frame.
                self._server_close_code = int(message.data)
            if message.type in ENDED:
                return
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            frame = message.json()
            op = frame.get("op")
            if op in ("hello", "heartbeat"):
                self.heartbeat_interval = float(frame.get("heartbeat", frame.get("interval")))
            if op == "heartbeat":
                continue
            if op == "hello":
                if not self._hello.done():
                    self._hello.set_result(frame)
                continue
            if op == "refresh" and self._token_provider is not None:
                if self._refreshing is None or self._refreshing.done():
                    self._refreshing = asyncio.create_task(self._refresh())
                continue
            if op in ("msg", "subscribed") and frame.get("ch") in self._resuming:
                if op == "msg" or frame.get("id") not in self._state.pending:
                    # The automatic subscription's window and what it sent live: all at
                    # or below what our resubscription's reply will hand out, exactly.
                    continue
                self._resuming.discard(frame["ch"])
            if op == "msg":
                self._accept(frame)
                continue
            # presence in the reader, in arrival order: an event right after the
            # `presence_state` reply is newer than it
            if op == "presence":
                self.presence[frame["user"]] = frame["status"]
            elif op == "presence_state":
                self.presence.update(frame["users"])
            if op == "subscribed":  # a reply, an auto-subscription or a new epoch
                self._apply_subscribed(frame)
            future = self._state.pending.get(frame.get("id"))
            if future is not None:
                if not future.done():
                    future.set_result(frame)
            elif op != "subscribed":
                self._events.put_nowait(frame)
