"""The newest publications of a channel, kept by the replica that follows it live, so a
subscriber joining a busy channel is answered without a Redis read.

A window starts from a read of the stream's latest publications (what a subscriber
without ``since`` is sent) and grows with every live publication the hub fans out, as long
as they come in offset order; anything else (a gap, a new epoch, a reconnect of the live
feed) drops it and the next subscriber reads Redis again. It is trusted for a few seconds
after the last read or live publication that confirmed it: what Redis changes without a
live message (a stream expiring, an age limit trimming it, an operator's FLUSHALL) is
seen within that bound.
"""

from __future__ import annotations

from collections import deque

from .backplane import Publication

__all__ = ["RecentWindow"]


class RecentWindow:
    """Publications ``top - len + 1 .. top`` of one stream, at most ``size`` of them."""

    __slots__ = ("_items", "checked_at", "size", "top")

    def __init__(self, size: int, top: int, publications: list[Publication], now: float) -> None:
        self.size = size
        self.top = top
        self._items: deque[Publication] = deque(publications[-size:] if size else (), size)
        self.checked_at = now

    @classmethod
    def from_read(
        cls, size: int, top: int, publications: list[Publication], now: float
    ) -> RecentWindow | None:
        """The window a read of the latest ``size`` publications makes, or None when the
        read is not one (its offsets do not run without a hole up to ``top``)."""
        expected = top - len(publications) + 1
        for publication in publications:
            if publication.offset != expected:
                return None
            expected += 1
        return cls(size, top, publications, now)

    def extend(self, publication: Publication, now: float) -> bool:
        """Add the next live publication; False (nothing added) when it is not the next."""
        if publication.offset != self.top + 1:
            return False
        self._items.append(publication)
        self.top = publication.offset
        self.checked_at = now
        return True

    def latest(self) -> list[Publication]:
        """What a read of the latest ``size`` publications would return, oldest first."""
        return list(self._items)

    def after(self, offset: int) -> list[Publication] | None:
        """Every publication after ``offset`` up to ``top``, or None when the window does
        not reach back that far (the stream must be read)."""
        if offset > self.top:
            return None
        missed = self.top - offset
        if missed > len(self._items):
            return None
        return list(self._items)[len(self._items) - missed :] if missed else []
