"""Small client helpers shared by the test layers."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import orjson

INTERLEAVED = {"msg", "join", "leave", "members_diff", "presence", "heartbeat"}
SECRET = "test-secret-0123456789abcdef-0123456789"

T = TypeVar("T")


async def receive_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> Any:
    message = await ws.receive(timeout=timeout)
    assert message.type is aiohttp.WSMsgType.TEXT, f"expected text, got {message!r}"
    return orjson.loads(message.data)


async def receive_op(
    ws: aiohttp.ClientWebSocketResponse, op: str, timeout: float = 5.0
) -> dict[str, Any]:
    """The next frame with ``op``; fails on anything else in between except the frames
    that may interleave with any reply: ``msg`` and membership or presence events."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await receive_json(ws, max(0.01, deadline - loop.time()))
        if frame["op"] == op:
            return dict(frame)
        assert frame["op"] in INTERLEAVED, f"expected {op}, got {frame}"


async def collect_msgs(
    ws: aiohttp.ClientWebSocketResponse, count: int, timeout: float = 10.0
) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got: list[dict[str, Any]] = []
    while len(got) < count:
        frame = await receive_json(ws, max(0.01, deadline - loop.time()))
        if frame["op"] == "msg":
            got.append(frame)
    return got


async def receive_close(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> int:
    """Read until the server closes; return the code of its close frame (1006: none came).

    The frame's code, not ``ws.close_code``: aiohttp's client replaces the latter with 1006
    when the server has already closed the socket as its reply is written, which is what
    a browser would not report."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = await ws.receive(timeout=max(0.01, deadline - loop.time()))
        if message.type is aiohttp.WSMsgType.CLOSE:
            return int(message.data)
        if message.type is aiohttp.WSMsgType.CLOSED:
            assert ws.close_code is not None
            return ws.close_code
        if message.type is aiohttp.WSMsgType.CLOSING:
            continue


async def eventually(
    check: Callable[[], Awaitable[T] | T],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``check`` (sync or async) until it returns a truthy value and return it; fail
    with the last value (or the last assertion) after ``timeout`` seconds. ``check`` may
    raise AssertionError while the condition does not hold yet."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: object = None
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            last = value
        except AssertionError as error:
            last = error
        if loop.time() >= deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)
