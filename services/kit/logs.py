"""Logs: one JSON object per line on stdout, with the event's fields at the top level;
and a bound on what unauthenticated garbage can make the replica log."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["BadHttpRequestFilter", "configure_logging", "quiet_bad_http_requests"]

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, node: str) -> None:
        super().__init__()
        self._static = {"service": service, "node": node}

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self._static,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str, service: str, node: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service, node))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class BadHttpRequestFilter(logging.Filter):
    """aiohttp logs every request it cannot parse (a URL over 8 KB, a bad request line) at
    ERROR with a traceback: about 800 bytes of log per request that anyone can send without
    a token. This turns each into one short warning line, at most ``limit`` per ``period``
    seconds; the lines left out are counted in the next one (``suppressed``)."""

    def __init__(
        self, limit: int = 10, period: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.limit = limit
        self.period = period
        self.suppressed = 0
        self._clock = clock
        self._window_start = -period
        self._in_window = 0

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        now = self._clock()
        if now - self._window_start >= self.period:
            self._window_start, self._in_window = now, 0
        self._in_window += 1
        if self._in_window > self.limit:
            self.suppressed += 1
            return False
        record.msg, record.args = "bad HTTP request refused", ()
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.event = "bad_http_request"
        record.status = error.code
        record.reason = str(error.message)[:100]
        if self.suppressed:
            record.suppressed, self.suppressed = self.suppressed, 0
        return True


def quiet_bad_http_requests() -> None:
    """Install :class:`BadHttpRequestFilter` on aiohttp's server logger (once)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, BadHttpRequestFilter) for f in server_log.filters):
        server_log.addFilter(BadHttpRequestFilter())
