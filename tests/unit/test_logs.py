from __future__ import annotations

import logging
import sys

from aiohttp.http_exceptions import LineTooLong

from services.kit.logs import BadHttpRequestFilter, JsonFormatter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def refused_request() -> logging.LogRecord:
    try:
        raise LineTooLong("x" * 9000, "8190", "9000")
    except LineTooLong:
        exc_info = sys.exc_info()
    return logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("127.0.0.1",),
        exc_info,
    )


def test_a_refused_request_becomes_one_short_warning_line():
    record = refused_request()
    assert BadHttpRequestFilter().filter(record) is True
    line = JsonFormatter("chat", "n1").format(record)
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "Traceback" not in line and "\n" not in line
    assert len(line) < 400
    assert '"event":"bad_http_request"' in line and '"status":400' in line


def test_refused_requests_are_rate_limited_and_the_rest_counted():
    clock = FakeClock()
    quiet = BadHttpRequestFilter(limit=3, period=60.0, clock=clock)
    kept = [quiet.filter(refused_request()) for _ in range(10)]
    assert kept == [True] * 3 + [False] * 7
    clock.now += 60
    record = refused_request()
    assert quiet.filter(record) is True
    assert record.suppressed == 7


def test_other_records_pass_untouched():
    record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "boom", (), None)
    assert BadHttpRequestFilter(limit=0).filter(record) is True
    assert record.levelno == logging.ERROR
