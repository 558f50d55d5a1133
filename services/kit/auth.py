"""Who is connecting: JWTs (HS256 with the shared secret, RS256/ES256 against an identity
provider's keys) and the Origin allow-list.

Which key checks a token is decided by its algorithm, and each algorithm has exactly one
kind of key: HS256 only the shared secret, RS256 and ES256 only the keys of the JWKS
document. So a token "signed" with a provider's *public* key as an HS256 secret (the
classic algorithm confusion) meets the shared secret and fails, and ``alg: none`` is
never accepted.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import parse_qsl

import jwt

from .jwks import KeySet

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "USER_PATTERN",
    "AuthError",
    "Identity",
    "TokenVerifier",
    "check_origin",
    "mint_token",
    "query_token",
    "verify_token",
]

USER_PATTERN = re.compile(r"[A-Za-z0-9_\-.@]{1,64}")
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")


class AuthError(Exception):
    """A refused handshake; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Identity:
    """What a valid token says: the user, until when, and since when (None: no ``iat``)."""

    user: str
    expires_at: float
    issued_at: float | None


def query_token(target: str) -> str | None:
    """The first ``token`` parameter of a request target (``/chat/ws?token=…``), decoded.

    Read from the raw target rather than aiohttp's ``request.query``: that builds a decoded
    copy of the whole query, which is mostly the token, and the request keeps it for the
    socket's life (~0.9 KiB of objects per connection when each has its own token)."""
    for name, value in parse_qsl(target.partition("?")[2], keep_blank_values=True):
        if name == "token":
            return value
    return None


def mint_token(user: str, secret: str, ttl_seconds: float = 3600.0) -> str:
    if not USER_PATTERN.fullmatch(user):
        raise ValueError("user ids are 1-64 characters of A-Z a-z 0-9 _ - . @")
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + int(ttl_seconds)}, secret, "HS256")


#: how many verified HS256 tokens a replica remembers (least recently used go first)
VERIFIED_TOKENS_KEPT = 10_000


class TokenVerifier:
    """Checks tokens with the shared secret (HS256) and, when configured, an identity
    provider's key set (RS256/ES256), plus ``iss`` and ``aud`` when they are set."""

    def __init__(
        self,
        secret: str | None,
        keys: KeySet | None = None,
        issuer: str | None = None,
        audience: str | None = None,
    ) -> None:
        self._secret = secret
        self.keys = keys
        self._issuer = issuer
        self._audience = audience
        # HS256 tokens already verified: a client reconnecting (a dropped network, a
        # deploy, a page reload) shows the same token again, and checking its signature
        # is most of a handshake's CPU (docs/benchmarks.md). Safe to keep: the secret is
        # fixed for the process's life, and expiry is checked on every use; revocation is
        # checked by the caller every time, cached or not.
        self._verified: OrderedDict[str, Identity] = OrderedDict()

    async def verify(self, token: str | None) -> Identity:
        """:meth:`verify_now`, fetching the provider's keys again first when the token
        names a key id the cached set does not have (a rotated key)."""
        if token and self.keys is not None:
            kid = _header(token).get("kid")
            if isinstance(kid, str) and not self.keys.has(kid):
                await self.keys.refresh_for_unknown_kid()
        return self.verify_now(token)

    def verify_now(self, token: str | None) -> Identity:
        """The identity of a valid token, or :class:`AuthError` (401)."""
        if not token:
            raise AuthError(401, "missing token query parameter")
        known = self._verified.get(token)
        if known is not None:
            if known.expires_at <= time.time():
                del self._verified[token]
                raise AuthError(401, "token expired")
            self._verified.move_to_end(token)
            return known
        header = _header(token)
        algorithm = header.get("alg")
        key: object
        if algorithm == "HS256":
            if not self._secret:
                raise AuthError(401, "invalid token: HS256 tokens are not accepted here")
            key = self._secret
        elif algorithm in ASYMMETRIC_ALGORITHMS:
            if self.keys is None:
                raise AuthError(401, f"invalid token: {algorithm} needs WWWS_JWKS_URL/FILE")
            found = self.keys.find(header.get("kid"), str(algorithm))
            if found is None:
                raise AuthError(401, "invalid token: no key for its kid and alg")
            key = found
        else:
            raise AuthError(401, f"invalid token: algorithm {algorithm!r} is not accepted")
        try:
            claims = jwt.decode(
                token,
                key,  # type: ignore[arg-type]
                algorithms=[str(algorithm)],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["sub", "exp"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "token expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, f"invalid token: {exc}") from None
        user = claims["sub"]
        if not isinstance(user, str) or not USER_PATTERN.fullmatch(user):
            raise AuthError(401, "invalid token: bad sub claim")
        issued = claims.get("iat")
        issued_at = float(issued) if isinstance(issued, int | float) else None
        identity = Identity(user, float(claims["exp"]), issued_at)
        if algorithm == "HS256":
            self._verified[token] = identity
            if len(self._verified) > VERIFIED_TOKENS_KEPT:
                self._verified.popitem(last=False)
        return identity


def verify_token(token: str | None, secret: str) -> Identity:
    """An HS256 token's identity (the shared secret only), or :class:`AuthError` (401)."""
    return TokenVerifier(secret).verify_now(token)


def _header(token: str) -> dict[str, object]:
    try:
        return dict(jwt.get_unverified_header(token))
    except jwt.InvalidTokenError as exc:
        raise AuthError(401, f"invalid token: {exc}") from None


def check_origin(origin: str | None, allowed: tuple[str, ...]) -> None:
    """Browsers always send Origin; a missing one is a non-browser client and allowed.

    Cross-site WebSocket hijacking needs a browser, which cannot omit the header.
    """
    if origin is None:
        return
    if "*" in allowed or origin.rstrip("/") in allowed:
        return
    raise AuthError(403, f"origin {origin!r} is not allowed")
