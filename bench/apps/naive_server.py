"""The floor: the naive aiohttp broadcast server, one process, no backplane.

Same frames as wwws for what the bench uses (``sub``, ``pub`` -> ``msg``), and the
textbook fan-out loop: ``for ws in room: await ws.send_str(m)``. No auth, no history, no
bounded queues: what a first prototype does.

    python -m bench.apps.naive_server PORT
"""

from __future__ import annotations

import json
import sys

from aiohttp import WSMsgType, web


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


ROOMS: dict[str, set[web.WebSocketResponse]] = {}


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_str(dumps({"op": "hello", "node": "naive"}))
    joined: list[str] = []
    try:
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            frame = json.loads(message.data)
            op, channel = frame.get("op"), frame.get("ch")
            if op == "sub":
                ROOMS.setdefault(channel, set()).add(ws)
                joined.append(channel)
                await ws.send_str(dumps({"op": "subscribed", "id": frame.get("id"), "ch": channel}))
            elif op == "pub":
                out = dumps({"op": "msg", "ch": channel, "data": frame.get("data")})
                for peer in list(ROOMS.get(channel, ())):
                    await peer.send_str(out)
    finally:
        for channel in joined:
            ROOMS.get(channel, set()).discard(ws)
    return ws


def main() -> None:
    app = web.Application()
    app.router.add_get("/naive/ws", websocket)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
