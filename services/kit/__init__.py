"""The wwws kit: what a WebSocket service is built from. Services import from here.

Words used with one meaning each:

- **service**: chat, ticker, telephony: what plugs into the kit (a :class:`ServiceSpec`:
  channel rules, ops, hooks, its own state) -- ``service.py``;
- **app**: the aiohttp application of one service in one process -- ``app.py`` builds it;
- **replica**: one running process of a service, behind Traefik with its siblings; its
  live state (connections, draining) is :class:`services.kit.replica.ReplicaState`;
- **server**: running a replica's two listeners and its drain -- ``server.py``;
- **session**: one client connection's life on a replica -- ``session.py``;
- **channel ops**: ``sub``/``unsub``/``pub``, which every service has -- ``channel_ops.py``;
- **internal app**: ``/healthz``, ``/readyz``, ``/metrics`` on the internal port --
  ``internal.py``;
- **token life**: a connection lives by its token: refreshed over the socket or closed
  at ``exp`` (``token_expiry.py``), revoked on every replica (``revocation.py``).

Backplane names are being restructured: only :class:`BackplaneUnavailable` and
:class:`Publication` are re-exported for now; the rest is in ``services.kit.backplane``.
"""

from __future__ import annotations

from .app import build_app
from .auth import USER_PATTERN, mint_token
from .backplane import BackplaneUnavailable, Publication
from .channel_ops import op_sub, subscribe, unsubscribe
from .connection import Connection
from .protocol import (
    CHANNEL_PATTERN,
    MAX_JSON_DEPTH,
    ClientFrame,
    CloseCode,
    ErrorCode,
    JsonTooDeep,
    ProtocolError,
    encode,
    error_frame,
    load_json,
    msg_frame,
    optional_since,
    require_channel,
    require_object,
    require_str,
    require_str_list,
)
from .revocation import revoke_user
from .server import main
from .service import CONTEXT, ChannelPolicy, OpHandler, ServiceContext, ServiceSpec
from .settings import Settings

__all__ = [
    "CHANNEL_PATTERN",
    "CONTEXT",
    "MAX_JSON_DEPTH",
    "USER_PATTERN",
    "BackplaneUnavailable",
    "ChannelPolicy",
    "ClientFrame",
    "CloseCode",
    "Connection",
    "ErrorCode",
    "JsonTooDeep",
    "OpHandler",
    "ProtocolError",
    "Publication",
    "ServiceContext",
    "ServiceSpec",
    "Settings",
    "build_app",
    "encode",
    "error_frame",
    "load_json",
    "main",
    "mint_token",
    "msg_frame",
    "op_sub",
    "optional_since",
    "require_channel",
    "require_object",
    "require_str",
    "require_str_list",
    "revoke_user",
    "subscribe",
    "unsubscribe",
]
