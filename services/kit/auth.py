"""Handshake authentication: HS256 JWTs (``sub``, ``exp``) and the Origin allow-list."""

from __future__ import annotations

import re
import time

import jwt

__all__ = ["USER_PATTERN", "AuthError", "check_origin", "mint_token", "verify_token"]

USER_PATTERN = re.compile(r"[A-Za-z0-9_\-.@]{1,64}")


class AuthError(Exception):
    """A refused handshake; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def mint_token(user: str, secret: str, ttl_seconds: float = 3600.0) -> str:
    if not USER_PATTERN.fullmatch(user):
        raise ValueError("user ids are 1-64 characters of A-Z a-z 0-9 _ - . @")
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + int(ttl_seconds)}, secret, "HS256")


def verify_token(token: str | None, secret: str) -> str:
    """Return the user id of a valid token, or raise :class:`AuthError` (401)."""
    if not token:
        raise AuthError(401, "missing token query parameter")
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["sub", "exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "token expired") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(401, f"invalid token: {exc}") from None
    user = claims["sub"]
    if not isinstance(user, str) or not USER_PATTERN.fullmatch(user):
        raise AuthError(401, "invalid token: bad sub claim")
    return user


def check_origin(origin: str | None, allowed: tuple[str, ...]) -> None:
    """Browsers always send Origin; a missing one is a non-browser client and allowed.

    Cross-site WebSocket hijacking needs a browser, which cannot omit the header.
    """
    if origin is None:
        return
    if "*" in allowed or origin.rstrip("/") in allowed:
        return
    raise AuthError(403, f"origin {origin!r} is not allowed")
