"""Telephony's channel policy: none. Presence goes through `watch`, calls through their
own ops; the channel ops (`sub`, `pub`, `history`) answer `not_found`."""

from __future__ import annotations

from typing import Any

from services.kit import ChannelPolicy, ClientFrame, Connection, ErrorCode

__all__ = ["NoChannels"]


class NoChannels(ChannelPolicy):
    """Telephony speaks in presence and call frames, not channels."""

    def authorize_subscribe(self, conn: Connection, channel: str, frame: ClientFrame) -> None:
        raise self.refuse(frame, ErrorCode.NOT_FOUND, "telephony has no channels: use watch")

    def prepare_publish(
        self, conn: Connection, channel: str, data: dict[str, Any], frame: ClientFrame
    ) -> dict[str, Any]:
        raise self.refuse(frame, ErrorCode.NOT_FOUND, "telephony has no channels")
