"""Wire protocol v1: parsing client frames and building server frames.

Sans-I/O: nothing here touches a socket, so every rule is unit-tested directly.
The public contract is docs/protocol.md; keep the two in step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

import orjson

__all__ = [
    "CHANNEL_PATTERN",
    "MAX_JSON_DEPTH",
    "ClientFrame",
    "CloseCode",
    "ErrorCode",
    "JsonTooDeep",
    "ProtocolError",
    "Since",
    "encode",
    "error_frame",
    "load_json",
    "msg_frame",
    "optional_since",
    "parse_client_frame",
    "require_channel",
    "require_object",
    "require_str",
    "require_str_list",
    "subscribed_frame",
]

# Channel names: letters, digits and a few separators, so they are safe in Redis keys, URLs
# and logs. ':' is allowed for namespaced channels such as ``user:alice``.
CHANNEL_PATTERN = re.compile(r"[A-Za-z0-9_\-.:@]{1,64}")
_MAX_ID_LENGTH = 64

# orjson parses 1,024 levels of nesting but serialises only 255, so data nested between
# the two would be accepted and then fail when it is stored or relayed. Nothing in the
# protocol needs more than a few levels: refuse deeper input where it is parsed.
MAX_JSON_DEPTH = 32


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"


class CloseCode(IntEnum):
    """Close codes; the range tells a client its reconnect policy (see docs/protocol.md)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # drain/deploy: reconnect at once, to another replica
    UNSUPPORTED_DATA = 1003  # binary frame where text is expected
    INVALID_PAYLOAD = 1007  # invalid UTF-8
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011  # reconnect with backoff
    TRY_AGAIN_LATER = 1013  # the backplane is unreachable: reconnect with backoff
    UNAUTHORIZED = 4001  # 4000-4099: do not reconnect
    FORBIDDEN = 4003
    PROTOCOL_VIOLATION = 4008
    TOKEN_EXPIRED = 4010  # not refreshed in time: reconnect with a new token, resume
    REVOKED = 4011  # the user's tokens were revoked: do not reconnect with this token
    SLOW_CONSUMER = 4108  # 4100-4199: reconnect with backoff, resume with `since`
    HEARTBEAT_TIMEOUT = 4110  # a ping went unanswered for a whole interval
    RATE_LIMITED = 4129


class ProtocolError(Exception):
    """A client frame the server refuses; becomes an ``error`` frame, never a crash."""

    def __init__(self, code: ErrorCode, message: str, frame_id: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.frame_id = frame_id


@dataclass(frozen=True, slots=True)
class ClientFrame:
    op: str
    id: str | int | None
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Since:
    epoch: str
    offset: int


class JsonTooDeep(ValueError):
    """JSON nested deeper than :data:`MAX_JSON_DEPTH`."""

    def __init__(self) -> None:
        super().__init__(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def load_json(text: str | bytes) -> Any:
    """``orjson.loads`` that refuses data nested deeper than :data:`MAX_JSON_DEPTH`
    (:class:`JsonTooDeep`, a ValueError like orjson's own decode error)."""
    value = orjson.loads(text)
    # Counting brackets is C-speed; only a document with enough of them can be too deep.
    if isinstance(text, str):
        brackets = text.count("[") + text.count("{")
    else:
        brackets = text.count(b"[") + text.count(b"{")
    if brackets > MAX_JSON_DEPTH and _deeper_than(value, MAX_JSON_DEPTH):
        raise JsonTooDeep()
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests more than ``limit`` arrays/objects (iterative: no recursion
    limit to hit on hostile input)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def parse_client_frame(text: str) -> ClientFrame:
    """Parse one text frame into an envelope; the op's own fields are checked by its handler."""
    try:
        body = load_json(text)
    except JsonTooDeep as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc)) from None
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a frame must be a JSON object")
    frame_id = body.get("id")
    if frame_id is not None and not _valid_id(frame_id):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "id must be a string (<=64 chars) or an integer")
    op = body.get("op")
    if not isinstance(op, str) or not op:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "missing op", frame_id)
    return ClientFrame(op=op, id=frame_id, body=body)


def _valid_id(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**53) <= value <= 2**53
    return isinstance(value, str) and len(value) <= _MAX_ID_LENGTH


def require_str(frame: ClientFrame, field: str, max_length: int = 256) -> str:
    value = frame.body.get(field)
    if not isinstance(value, str) or not value:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{field} must be a non-empty string", frame.id)
    if len(value) > max_length:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{field} is longer than {max_length}", frame.id)
    return value


def require_channel(frame: ClientFrame) -> str:
    value = frame.body.get("ch")
    if not isinstance(value, str) or not CHANNEL_PATTERN.fullmatch(value):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            "ch must be 1-64 characters of A-Z a-z 0-9 _ - . : @",
            frame.id,
        )
    return value


def optional_int(frame: ClientFrame, field: str, default: int, low: int, high: int) -> int:
    """An optional integer field in ``low..high`` (``bad_request`` otherwise)."""
    value = frame.body.get(field, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{field} must be {low}-{high}", frame.id)
    return value


def require_object(frame: ClientFrame, field: str) -> dict[str, Any]:
    value = frame.body.get(field)
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{field} must be a JSON object", frame.id)
    return value


def require_str_list(frame: ClientFrame, field: str, max_items: int) -> list[str]:
    value = frame.body.get(field)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{field} must be a list of strings", frame.id)
    if len(value) > max_items:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"{field} has more than {max_items}", frame.id)
    return value


def optional_since(frame: ClientFrame) -> Since | None:
    value = frame.body.get("since")
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("epoch"), str)
        or not isinstance(value.get("offset"), int)
        or isinstance(value.get("offset"), bool)
        or not 0 <= value["offset"] < 2**53  # offsets are exact in Lua and JS below 2^53
    ):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            "since must be {epoch: string, offset: integer >= 0}",
            frame.id,
        )
    return Since(epoch=value["epoch"], offset=value["offset"])


def encode(frame: dict[str, Any]) -> bytes:
    return orjson.dumps(frame)


def error_frame(code: ErrorCode, message: str, frame_id: str | int | None = None) -> bytes:
    frame: dict[str, Any] = {"op": "error", "code": code.value, "message": message}
    if frame_id is not None:
        frame["id"] = frame_id
    return encode(frame)


def msg_frame(channel: str, offset: int, data: bytes) -> bytes:
    """A publication frame, assembled from the stored JSON so it is never re-serialised."""
    return b'{"op":"msg","ch":%b,"offset":%d,"data":%b}' % (orjson.dumps(channel), offset, data)


def subscribed_frame(
    frame_id: str | int | None,
    channel: str,
    epoch: str,
    offset: int,
    recovered: bool,
    publications: list[Any],
) -> bytes:
    """The reply to ``sub``; ``publications`` are backplane publications of ``channel``."""
    head = {
        "op": "subscribed",
        "ch": channel,
        "epoch": epoch,
        "offset": offset,
        "recovered": recovered,
    }
    if frame_id is not None:
        head["id"] = frame_id
    items = b",".join(msg_frame(channel, p.offset, p.data) for p in publications)
    return encode(head)[:-1] + b',"publications":[' + items + b"]}"
