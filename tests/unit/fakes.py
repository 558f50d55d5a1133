"""Fakes for the kit's unit tests: a clock to move by hand, a connection, a subscriber."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.kit.backplane import Publication
from services.kit.hub import SubscribeResult


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(eq=False)
class FakeConnection:
    """What the roster uses of a connection: its id and user (and identity as a key)."""

    id: str
    user: str


@dataclass(eq=False)
class Recorder:
    """A hub subscriber that keeps what it is given."""

    publications: list[Publication] = field(default_factory=list)
    replies: list[SubscribeResult] = field(default_factory=list)

    @property
    def offsets(self) -> list[int]:
        return [p.offset for p in self.publications]

    def deliver(self, channel: str, publication: Publication, frame: bytes) -> None:
        self.publications.append(publication)

    def resubscribed(self, channel: str, result: SubscribeResult) -> None:
        self.replies.append(result)
