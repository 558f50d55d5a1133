"""Revoking a user: every connection of theirs, on every replica of every service, closes
with 4011, and their tokens issued until then are refused (handshake, refresh).

The revocation is recorded in the backplane (:mod:`.backplane.revocations`) and announced
on the kit-wide ephemeral channel :data:`REVOCATION_CHANNEL`, which every replica hears
for its whole life. A replica cut off from the backplane at that moment misses the
announcement; its connections of the user then end at the latest when their token has to
be refreshed (a revoked token does not refresh). Operators revoke through the admin
service (``POST /admin/api/revoke``, the console's ``revoke`` op).
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

from .auth import AuthError, Identity
from .background import stoppable, wait_or_stop
from .backplane import BackplaneUnavailable, Publication
from .protocol import CloseCode
from .service import ServiceContext

__all__ = [
    "REVOCATION_CHANNEL",
    "check_not_revoked",
    "is_revoked",
    "revocation_lifecycle",
    "revoke_user",
]

log = logging.getLogger(__name__)

#: outside every service's namespace: all services hear it
REVOCATION_CHANNEL = "wwws:revocations"
LISTEN_RETRY_SECONDS = 1.0
# A kept revocation answer stands in for a read only while the backplane watch (which
# probes about every second) heard Redis this recently (seconds).
ANSWERED_WITHIN = 2.0
# A replica's first handshakes wait this long (seconds) for it to hear announcements.
HEARING_WAIT = 2.0


def is_revoked(issued_at: float | None, revoked_at: float | None) -> bool:
    """A token issued at or before the revocation is void. ``iat`` has whole seconds, so
    a token minted within the revocation's own second is refused too (mint it again a
    second later); a token without ``iat`` cannot prove it is newer."""
    if revoked_at is None:
        return False
    return issued_at is None or issued_at <= revoked_at


async def check_not_revoked(ctx: ServiceContext, identity: Identity) -> None:
    """:class:`AuthError` (401) for a revoked token; BackplaneUnavailable when the
    revocation store cannot answer (the handshake is then refused with 503).

    A recent answer for the user (known_revocations.py) is used instead of a read only
    while the backplane watch heard the backplane within :data:`ANSWERED_WITHIN`, so a
    replica cut off from Redis still refuses handshakes with 503 as it did. A replica
    that does not hear announcements yet (just started) answers once it does, or with
    BackplaneUnavailable after :data:`HEARING_WAIT`."""
    known = ctx.replica.known_revocations
    if not known.hearing and not await known.until_hearing(HEARING_WAIT):
        # a connection opened before the replica hears revocations would outlive one
        # announced meanwhile: a replica just started waits until it does, briefly
        raise BackplaneUnavailable("this replica does not hear revocations yet")
    found, revoked_at = known.lookup(identity.user)
    answered = time.monotonic() - ctx.replica.backplane_answered_at <= ANSWERED_WITHIN
    if not (found and answered):
        generation = known.generation
        revoked_at = await ctx.backplane.revocations.revoked_at(identity.user)
        known.remember(identity.user, revoked_at, generation)
    if is_revoked(identity.issued_at, revoked_at):
        raise AuthError(401, "token revoked: log in again")


async def revoke_user(ctx: ServiceContext, user: str) -> float:
    """Record the revocation, then announce it; returns its time (s since the epoch)."""
    at = await ctx.backplane.revocations.revoke(user, ctx.settings.revocation_keep_seconds)
    ctx.replica.known_revocations.heard(user)  # here at once, before its announcement
    payload = orjson.dumps({"user": user, "at": at})
    await ctx.backplane.broker.publish(REVOCATION_CHANNEL, payload, history=False)
    log.info("user revoked", extra={"event": "revoke", "user": user})
    return at


def close_revoked(ctx: ServiceContext, publication: Publication) -> None:
    try:
        notice = orjson.loads(publication.data)
        user, at = str(notice["user"]), float(notice["at"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        log.warning("ignored a malformed revocation")
        ctx.replica.known_revocations.forget_all()  # whose it was is not known
        return
    ctx.replica.known_revocations.heard(user)
    for conn in list(ctx.replica.connections):
        if conn.user == user and is_revoked(conn.issued_at, at):
            conn.close(CloseCode.REVOKED, "revoked: do not reconnect with this token")


async def _listen(ctx: ServiceContext, stop: asyncio.Event) -> None:
    """Start hearing revocations, trying again while the backplane is away at start (the
    broker itself listens again after a reconnect)."""
    while not stop.is_set():
        try:
            known = ctx.replica.known_revocations
            await ctx.hub.listen_outside(
                REVOCATION_CHANNEL, lambda p: close_revoked(ctx, p), known.forget_all
            )
            known.hearing = True
            return
        except BackplaneUnavailable:
            await wait_or_stop(stop, LISTEN_RETRY_SECONDS)


#: the aiohttp cleanup context hearing revocations while the app runs
revocation_lifecycle = stoppable("revocations", _listen, LISTEN_RETRY_SECONDS + 5.0)
