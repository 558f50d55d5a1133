"""The Python client reconnects by close code and resumes without loss or duplicates."""

from __future__ import annotations

import asyncio

from replicas import token

from services.chat.app import create_app
from services.kit.app import CONTEXT
from services.kit.client import Client, ClientError


def ws_url(client) -> str:
    return str(client.make_url("/chat/ws")).replace("http://", "ws://")


async def test_client_resumes_after_its_connection_drops(replicas):
    server = await replicas.start(create_app, "chat")
    url = ws_url(server)
    async with Client(url, token("reader"), backoff_base=0.01) as reader:
        await reader.subscribe("lobby")
        async with Client(url, token("writer")) as writer:
            await writer.subscribe("lobby")
            acked = [await writer.publish("lobby", {"text": f"m{i}"}) for i in range(5)]
            for conn in list(server.app[CONTEXT].replica.connections):
                if conn.user == "reader":
                    await conn.close(1011, "simulated crash")
            acked += [await writer.publish("lobby", {"text": f"m{i}"}) for i in range(5, 10)]
            got: list[int] = []
            while len(got) < 10:
                _channel, offset, _data = await asyncio.wait_for(reader._inbox.get(), 10)
                got.append(offset)
            assert got == acked == list(range(1, 11))
            assert reader.reconnects >= 1 and reader.gaps == []


async def test_client_stops_on_4xxx_and_reports_errors(replicas):
    server = await replicas.start(create_app, "chat")
    async with Client(ws_url(server), token("alice")) as client:
        try:
            await client.publish("lobby", {"text": "not subscribed"})
        except ClientError as error:
            assert error.code == "forbidden"
        else:
            raise AssertionError("expected forbidden")
        for conn in list(server.app[CONTEXT].replica.connections):
            await conn.close(4003, "go away")
        for _ in range(100):
            if client.stopped_with is not None:
                break
            await asyncio.sleep(0.02)
        assert client.stopped_with == 4003
