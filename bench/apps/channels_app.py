"""Peer: Django Channels with channels-redis (the core RedisChannelLayer), under uvicorn.

JSON frames: ``{"op":"sub","ch":room}`` -> group_add, reply ``subscribed``;
``{"op":"pub","ch":room,"text":...}`` -> group_send -> every consumer sends ``msg``.

    BENCH_REDIS_URL=redis://... uvicorn --app-dir bench/apps channels_app:application
"""

import json
import os

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-only-not-secret",
    ALLOWED_HOSTS=["*"],
    INSTALLED_APPS=["channels"],
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")]},
        }
    },
)
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class Room(AsyncWebsocketConsumer):
    async def connect(self):
        self.rooms = []
        await self.accept()
        await self.send(text_data='{"op":"hello","node":"channels"}')

    async def disconnect(self, code):
        for room in self.rooms:
            await self.channel_layer.group_discard(room, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        frame = json.loads(text_data)
        if frame.get("op") == "sub":
            await self.channel_layer.group_add(frame["ch"], self.channel_name)
            self.rooms.append(frame["ch"])
            await self.send(
                text_data=json.dumps({"op": "subscribed", "ch": frame["ch"]}, separators=(",", ":"))
            )
        elif frame.get("op") == "pub":
            await self.channel_layer.group_send(
                frame["ch"], {"type": "room.msg", "ch": frame["ch"], "data": frame.get("data")}
            )

    async def room_msg(self, event):
        await self.send(
            text_data=json.dumps(
                {"op": "msg", "ch": event["ch"], "data": event["data"]}, separators=(",", ":")
            )
        )


application = ProtocolTypeRouter({"websocket": URLRouter([path("channels/ws", Room.as_asgi())])})
