"""Ticker channels: symbols (prices, read-only) and personal notification channels."""

from __future__ import annotations

import re
from typing import Any

from services.kit.connection import Connection
from services.kit.protocol import ClientFrame, ErrorCode
from services.kit.service import ChannelPolicy

__all__ = ["SYMBOL_PATTERN", "TickerChannels", "personal_channel"]

SYMBOL_PATTERN = re.compile(r"[A-Z][A-Z0-9.]{0,9}")
NOTIFICATION_WINDOW = 20


def personal_channel(user: str) -> str:
    return f"user:{user}"


class TickerChannels(ChannelPolicy):
    """A symbol's snapshot is its latest price; personal channels keep a window of
    notifications. Clients publish nothing: prices come from the feed, notifications
    from the server-to-server API."""

    def window(self, channel: str) -> int:
        return NOTIFICATION_WINDOW if channel.startswith("user:") else 1

    def authorize_subscribe(self, conn: Connection, channel: str, frame: ClientFrame) -> None:
        if channel.startswith("user:"):
            if channel != personal_channel(conn.user):
                raise self.refuse(frame, ErrorCode.FORBIDDEN, "another user's channel")
            return
        if not SYMBOL_PATTERN.fullmatch(channel):
            raise self.refuse(
                frame, ErrorCode.NOT_FOUND, "symbols are 1-10 of A-Z 0-9 . (e.g. AAPL)"
            )

    def prepare_publish(
        self, conn: Connection, channel: str, data: dict[str, Any], frame: ClientFrame
    ) -> dict[str, Any]:
        raise self.refuse(frame, ErrorCode.FORBIDDEN, "ticker channels are read-only")
