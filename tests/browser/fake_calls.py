"""A stand-in for telephony's call signalling, so the page's call UI can be tested today.

The telephony service has presence but no calls yet. These ops follow DESIGN.md's call
frames (call → ringing/offline/busy; incoming; answer → answered; reject → rejected;
hangup → ended; signal relayed with `from`), for one replica only and without the ring
timeout. They plug into the REAL telephony app (real kit, handshake, presence); when the
service grows its own call ops, use its app and delete this module.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from services.kit.app import build_app
from services.kit.backplane import Backplane
from services.kit.connection import Connection
from services.kit.protocol import ClientFrame, ErrorCode, ProtocolError, encode, require_str
from services.kit.service import ServiceContext
from services.kit.settings import Settings
from services.telephony.app import SPEC

__all__ = ["create_app_with_calls"]


@dataclass
class _Call:
    caller: Connection
    callee_user: str
    callee: Connection | None = None


def _calls(ctx: ServiceContext) -> dict[str, _Call]:
    found: dict[str, _Call] = ctx.extras.setdefault("fake_calls", {})
    return found


def _send(conn: Connection, frame: dict[str, Any]) -> None:
    conn.send(encode(frame), frame["op"])


def _find(ctx: ServiceContext, frame: ClientFrame) -> tuple[str, _Call]:
    call_id = require_str(frame, "call_id")
    call = _calls(ctx).get(call_id)
    if call is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such call", frame.id)
    return call_id, call


def _busy(ctx: ServiceContext, user: str) -> bool:
    return any(
        c.caller.user == user or (c.callee is not None and c.callee.user == user)
        for c in _calls(ctx).values()
    )


async def op_call(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    to = require_str(frame, "to", 64)
    callees = [c for c in ctx.replica.connections if c.user == to]
    if not callees:
        _send(conn, {"op": "offline", "id": frame.id})
        return
    if _busy(ctx, to):
        _send(conn, {"op": "busy", "id": frame.id})
        return
    call_id = secrets.token_hex(6)
    _calls(ctx)[call_id] = _Call(caller=conn, callee_user=to)
    _send(conn, {"op": "ringing", "id": frame.id, "call_id": call_id})
    for callee in callees:
        _send(callee, {"op": "incoming", "call_id": call_id, "from": conn.user})


async def op_answer(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    call_id, call = _find(ctx, frame)
    call.callee = conn
    _send(call.caller, {"op": "answered", "call_id": call_id})


async def op_reject(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    call_id, call = _find(ctx, frame)
    del _calls(ctx)[call_id]
    _send(call.caller, {"op": "rejected", "call_id": call_id})


async def op_hangup(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    call_id, call = _find(ctx, frame)
    del _calls(ctx)[call_id]
    reason = "hangup"
    if conn is call.caller:
        if call.callee is None:
            reason = "cancelled"  # hung up while it rang
        others = [call.callee] if call.callee else _callees(ctx, call)
    else:
        others = [call.caller]
    for other in others:
        _send(other, {"op": "ended", "call_id": call_id, "reason": reason})


async def op_signal(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    call_id, call = _find(ctx, frame)
    data = frame.body.get("data")
    other = call.callee if conn is call.caller else call.caller
    if other is not None:
        _send(other, {"op": "signal", "call_id": call_id, "from": conn.user, "data": data})


def _callees(ctx: ServiceContext, call: _Call) -> list[Connection]:
    return [c for c in ctx.replica.connections if c.user == call.callee_user]


CALL_OPS = {
    "call": op_call,
    "answer": op_answer,
    "reject": op_reject,
    "hangup": op_hangup,
    "signal": op_signal,
}


def create_app_with_calls(
    settings: Settings, backplane: Backplane | None = None
) -> web.Application:
    return build_app(settings, replace(SPEC, ops={**SPEC.ops, **CALL_OPS}), backplane)
