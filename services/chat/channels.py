"""Chat rooms: who may post where, and what a message is."""

from __future__ import annotations

import time
from typing import Any

from services.kit.connection import Connection
from services.kit.protocol import ClientFrame, ErrorCode
from services.kit.service import ChannelPolicy

__all__ = ["MAX_TEXT_LENGTH", "ChatRooms"]

MAX_TEXT_LENGTH = 2000
HISTORY_WINDOW = 50
PUBLISH_RATE = (20.0, 40)  # per connection: 20 messages/s, bursts of 40


class ChatRooms(ChannelPolicy):
    """Any valid channel name is a room, joined by subscribing.

    Posting needs a subscription first, so every poster also sees the room's order.
    The server stamps ``user`` (from the token) and ``ts`` (ms since the epoch);
    whatever a client sends in those fields is replaced.
    """

    publish_rate = PUBLISH_RATE

    def window(self, channel: str) -> int:
        return HISTORY_WINDOW

    def prepare_publish(
        self, conn: Connection, channel: str, data: dict[str, Any], frame: ClientFrame
    ) -> dict[str, Any]:
        if channel not in conn.subscriptions:
            raise self.refuse(frame, ErrorCode.FORBIDDEN, f"subscribe to {channel} first")
        text = data.get("text")
        if not isinstance(text, str) or not text.strip():
            raise self.refuse(frame, ErrorCode.BAD_REQUEST, "data.text must be non-empty text")
        if len(text) > MAX_TEXT_LENGTH:
            raise self.refuse(
                frame, ErrorCode.TOO_LARGE, f"data.text is over {MAX_TEXT_LENGTH} characters"
            )
        return {"text": text, "user": conn.user, "ts": round(time.time() * 1000, 3)}
