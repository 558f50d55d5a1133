"""An identity provider's public keys (a JWKS document), for RS256 and ES256 tokens.

From a file (``WWWS_JWKS_FILE``: read once, at start; a bad file stops the replica with
a message) or a URL (``WWWS_JWKS_URL``, e.g. Keycloak's ``.../protocol/openid-connect/
certs``): fetched at start, again every ``WWWS_JWKS_REFRESH_SECONDS`` and when a token
names a key id the set does not have (a rotated key), at most once per
:data:`MIN_REFETCH_SECONDS`. While a URL cannot be fetched the last good set stays in use;
before the first success every RS256/ES256 token is refused (401).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import jwt
import orjson
from aiohttp import web

__all__ = ["MIN_REFETCH_SECONDS", "JwksError", "KeySet"]

log = logging.getLogger(__name__)

MIN_REFETCH_SECONDS = 10.0
FETCH_TIMEOUT = 5.0
MAX_DOCUMENT_BYTES = 256 * 1024


class JwksError(Exception):
    """The key set cannot be read or holds no usable key; the message says which."""


class KeySet:
    def __init__(
        self,
        url: str | None = None,
        refresh_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._keys: list[jwt.PyJWK] = []
        self._last_fetch = float("-inf")
        self._fetching: asyncio.Lock | None = None

    @classmethod
    def from_document(cls, document: Any) -> KeySet:
        keys = cls()
        keys._keys = _parse(document)
        return keys

    @classmethod
    def from_file(cls, path: str) -> KeySet:
        try:
            with open(path, "rb") as source:
                document = orjson.loads(source.read(MAX_DOCUMENT_BYTES + 1))
        except OSError as exc:
            raise JwksError(f"WWWS_JWKS_FILE={path}: cannot read it ({exc.strerror})") from None
        except orjson.JSONDecodeError as exc:
            raise JwksError(f"WWWS_JWKS_FILE={path}: not JSON ({exc})") from None
        try:
            return cls.from_document(document)
        except JwksError as exc:
            raise JwksError(f"WWWS_JWKS_FILE={path}: {exc}") from None

    # -- lookups ----------------------------------------------------------------------
    def has(self, kid: str) -> bool:
        return any(key.key_id == kid for key in self._keys)

    def find(self, kid: object, algorithm: str) -> Any:
        """The key for a token's ``kid`` and ``alg``: by key id when the token names one,
        else the only key of that algorithm; None when there is none (or several)."""
        fitting = [key for key in self._keys if key.algorithm_name == algorithm]
        if isinstance(kid, str):
            fitting = [key for key in fitting if key.key_id == kid]
        elif kid is not None:
            return None
        return fitting[0].key if len(fitting) == 1 else None

    # -- fetching (URL only) -----------------------------------------------------------
    async def fetch(self) -> None:
        """Fetch the URL now; :class:`JwksError` when it fails (the old set stays)."""
        assert self.url is not None
        self._last_fetch = self._clock()
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self.url) as response,
            ):
                if response.status != 200:
                    raise JwksError(f"WWWS_JWKS_URL answered HTTP {response.status}")
                body = await response.content.read(MAX_DOCUMENT_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise JwksError(f"WWWS_JWKS_URL: {type(exc).__name__}: {exc}") from None
        if len(body) > MAX_DOCUMENT_BYTES:
            raise JwksError(f"WWWS_JWKS_URL: document over {MAX_DOCUMENT_BYTES} bytes")
        try:
            self._keys = _parse(orjson.loads(body))
        except orjson.JSONDecodeError as exc:
            raise JwksError(f"WWWS_JWKS_URL: not JSON ({exc})") from None
        log.info("identity provider keys loaded", extra={"event": "jwks", "keys": len(self._keys)})

    async def refresh_for_unknown_kid(self) -> None:
        """A token names a key we lack: fetch again, unless that was tried just now (so
        tokens with made-up key ids cannot make the replica hammer the provider)."""
        if self.url is None or self._clock() - self._last_fetch < MIN_REFETCH_SECONDS:
            return
        if self._fetching is None:
            self._fetching = asyncio.Lock()
        async with self._fetching:
            if self._clock() - self._last_fetch < MIN_REFETCH_SECONDS:
                return  # another handshake fetched while this one waited
            try:
                await self.fetch()
            except JwksError as exc:
                log.warning("identity provider keys not refreshed: %s", exc)

    async def keep_fresh(self) -> None:
        """Fetch at start (retrying every :data:`MIN_REFETCH_SECONDS` until it works),
        then every ``refresh_seconds``."""
        while True:
            try:
                await self.fetch()
                delay = self._refresh_seconds
            except JwksError as exc:
                log.error("identity provider keys not loaded: %s", exc)
                delay = MIN_REFETCH_SECONDS if not self._keys else self._refresh_seconds
            await asyncio.sleep(delay)

    def lifecycle(self) -> Callable[[web.Application], AsyncIterator[None]]:
        """An aiohttp cleanup context keeping a URL's keys fresh while the app runs."""

        async def run(app: web.Application) -> AsyncIterator[None]:
            task = asyncio.create_task(self.keep_fresh(), name="jwks")
            yield
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        return run


def _parse(document: Any) -> list[jwt.PyJWK]:
    """The RS256 and ES256 signing keys of a JWKS document (others are left out)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError('not a JWKS document: {"keys": [...]} expected')
    keys = []
    for item in document["keys"]:
        if not isinstance(item, dict) or item.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(item)
        except jwt.PyJWKError:
            continue  # an algorithm or key type we do not take
        if key.algorithm_name in ("RS256", "ES256"):
            keys.append(key)
    if not keys:
        raise JwksError("no RS256 or ES256 signing key in the document")
    return keys
