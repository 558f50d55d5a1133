"""Peer: python-socketio (aiohttp server) with its Redis manager, WebSocket transport only.

Events: ``sub`` (room) -> join, reply ``subscribed``; ``pub`` ({ch, text}) -> ``msg`` to the
room through the Redis manager (as every multi-process python-socketio deployment does).

    python psio_server.py PORT REDIS_URL
"""

import sys

import socketio
from aiohttp import web

mgr = socketio.AsyncRedisManager(sys.argv[2])
sio = socketio.AsyncServer(
    async_mode="aiohttp", client_manager=mgr, cors_allowed_origins="*", transports=["websocket"]
)


@sio.on("sub")
async def sub(sid, room):
    await sio.enter_room(sid, room)
    await sio.emit("subscribed", room, to=sid)


@sio.on("pub")
async def pub(sid, data):
    await sio.emit("msg", data, room=data["ch"])


app = web.Application()
sio.attach(app)

if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
