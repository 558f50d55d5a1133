"""WWWS_GC_FREEZE: once a replica listens, what start-up left alive is frozen out of the
cyclic collector (gc.freeze), by default; WWWS_GC_FREEZE=0 leaves it in."""

from __future__ import annotations

import asyncio
import gc

import aiohttp
from replicas import make_settings
from stack import free_port

from services.chat.app import create_app as create_chat
from services.kit.server import serve


async def frozen_once_listening(gc_freeze: bool) -> int:
    gc.unfreeze()
    port, internal = free_port(), free_port()
    settings = make_settings(
        "chat",
        host="127.0.0.1",
        port=port,
        internal_port=internal,
        drain_seconds=0.0,
        gc_freeze=gc_freeze,
    )
    stop = asyncio.Event()
    server = asyncio.create_task(serve(create_chat(settings), stop))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"http://127.0.0.1:{internal}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        return gc.get_freeze_count()
    finally:
        stop.set()
        await server
        gc.unfreeze()


async def test_the_start_up_objects_are_frozen_by_default():
    assert make_settings("chat").gc_freeze
    assert await frozen_once_listening(gc_freeze=True) > 1000


async def test_nothing_is_frozen_when_turned_off():
    assert await frozen_once_listening(gc_freeze=False) == 0
