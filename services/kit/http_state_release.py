"""Free what aiohttp keeps for HTTP once a connection has become a WebSocket.

After the upgrade aiohttp hands every byte the client sends to the WebSocket reader, yet
the connection's ``RequestHandler`` keeps, for the socket's life, its HTTP/1.1 request
parser (the C parser's state and buffers: 1.6 KiB a connection, measured with
``tracemalloc``) and its queue of pipelined requests (an empty ``deque``: 0.75 KiB).
Together that is an eighth of an idle connection. Neither is used again:

- the parser: aiohttp drops it itself when the connection is lost (``connection_lost``
  sets ``_parser = None``), and every later use of it either runs only before an upgrade
  or checks for ``None``; dropping it at the upgrade is what aiohttp does at the close,
  done earlier;
- the request queue: after an accepted upgrade aiohttp only asks whether it is empty
  (the upgraded connection is never kept alive for a next request); an empty tuple
  answers that, and would fail loudly, not silently, if anything tried to queue on it.

``tests/unit/test_http_state_release.py`` fails if an aiohttp upgrade renames what this
touches or changes how an upgraded connection uses it.
"""

from __future__ import annotations

from aiohttp import web

__all__ = ["release_http_state"]

#: what an upgraded connection's request queue becomes: empty, and immutable
NO_REQUESTS: tuple[()] = ()


def release_http_state(request: web.BaseRequest) -> bool:
    """Drop an upgraded connection's HTTP parser and request queue; return whether done."""
    protocol = request.protocol
    # Only once the upgrade is done: aiohttp then feeds the WebSocket reader (its
    # `_payload_parser`) and never the HTTP parser again, and will not keep the
    # connection alive for another request.
    if getattr(protocol, "_payload_parser", None) is None or not getattr(
        protocol, "_upgraded", False
    ):
        return False
    if getattr(protocol, "_messages", NO_REQUESTS):  # a request queued behind the upgrade
        return False
    protocol._parser = None
    protocol._messages = NO_REQUESTS  # type: ignore[assignment]
    return True
