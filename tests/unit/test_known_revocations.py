"""What a replica keeps of revocation reads: for a while, and never past what it hears."""

from __future__ import annotations

from services.kit.known_revocations import KnownRevocations


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def hearing(keep: float = 10.0, limit: int = 100) -> tuple[KnownRevocations, Clock]:
    clock = Clock()
    known = KnownRevocations(keep, limit, clock)
    known.hearing = True
    return known, clock


def test_an_answer_is_kept_for_its_time_then_read_again():
    known, clock = hearing(keep=10)
    assert known.lookup("alice") == (False, None)
    known.remember("alice", None, known.generation)
    known.remember("bob", 50.0, known.generation)
    assert known.lookup("alice") == (True, None) and known.lookup("bob") == (True, 50.0)
    clock.now += 10.5
    assert known.lookup("alice") == (False, None) and len(known) == 1


def test_nothing_is_kept_before_the_replica_hears_the_announcements():
    known = KnownRevocations()
    known.remember("alice", None, known.generation)
    assert known.lookup("alice") == (False, None)


def test_an_announcement_drops_the_user_and_spoils_reads_in_flight():
    known, _ = hearing()
    known.remember("alice", None, known.generation)
    started = known.generation  # a read of bob starts...
    known.heard("alice")  # ...a revocation is announced meanwhile...
    known.remember("bob", None, started)  # ...so its answer may predate it: not kept
    assert known.lookup("alice") == (False, None) and known.lookup("bob") == (False, None)


def test_a_reconnected_feed_forgets_everything():
    known, _ = hearing()
    for user in ("alice", "bob"):
        known.remember(user, None, known.generation)
    started = known.generation
    known.forget_all()
    known.remember("carol", None, started)
    assert len(known) == 0


def test_the_oldest_entry_makes_room_at_the_limit():
    known, _ = hearing(limit=2)
    for user in ("alice", "bob", "carol"):
        known.remember(user, None, known.generation)
    assert [known.lookup(u)[0] for u in ("alice", "bob", "carol")] == [False, True, True]
