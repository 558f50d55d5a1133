"""The backplane contract, run against memory and real Redis alike."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from services.kit.backplane import Publication, RedisBackplane
from services.kit.hub import ChannelHub, SubscribeResult
from services.kit.protocol import Since


class Recorder:
    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.replies: list[SubscribeResult] = []

    def deliver(self, channel: str, publication: Publication, frame: bytes) -> None:
        self.offsets.append(publication.offset)

    def resubscribed(self, channel: str, result: SubscribeResult) -> None:
        self.replies.append(result)


@pytest.fixture
async def backplanes(backplane_factory):
    made = []

    def make(**kwargs):
        backplane = backplane_factory(**kwargs)
        made.append(backplane)
        return backplane

    yield make
    for backplane in made:
        await backplane.close()


async def test_offsets_are_gapless_and_epoch_stable(backplanes):
    backplane = backplanes()
    results = [await backplane.publish("ch", b'{"n":%d}' % i) for i in range(5)]
    assert [offset for _, offset in results] == [1, 2, 3, 4, 5]
    assert len({epoch for epoch, _ in results}) == 1
    found = await backplane.read("ch", 2, 100)
    assert [p.offset for p in found.publications] == [3, 4, 5]
    assert [orjson.loads(p.data)["n"] for p in found.publications] == [2, 3, 4]
    assert found.top == 5 and found.first == 1 and found.covers(2)


async def test_empty_channel_has_an_epoch(backplanes):
    backplane = backplanes()
    first = await backplane.read_latest("quiet", 10)
    again = await backplane.read_latest("quiet", 10)
    assert first.epoch and first.epoch == again.epoch and first.top == 0
    epoch, offset = await backplane.publish("quiet", b"{}")
    assert (epoch, offset) == (first.epoch, 1)


async def test_history_window_is_bounded_by_count(backplanes):
    backplane = backplanes(history_size=3)
    for _i in range(10):
        await backplane.publish("ch", b"{}")
    found = await backplane.read("ch", 0, 100)
    assert [p.offset for p in found.publications] == [8, 9, 10]
    assert found.first == 8 and not found.covers(5) and found.covers(7)


async def test_history_window_is_bounded_by_age(backplanes):
    backplane = backplanes(history_max_age=0.3)
    for _ in range(3):
        await backplane.publish("ch", b"{}")
    await asyncio.sleep(0.5)
    assert (await backplane.read("ch", 0, 100)).publications == []
    await backplane.publish("ch", b"{}")
    found = await backplane.read("ch", 0, 100)
    assert [p.offset for p in found.publications] == [4]
    assert found.first == 4 and not found.covers(0) and found.covers(3)


async def test_concurrent_publishes_are_ordered_the_same_everywhere(backplanes):
    one, two, three = backplanes(), backplanes(), backplanes()
    hubs = [ChannelHub(b, "t") for b in (one, two, three)]
    recorders = [Recorder(), Recorder()]
    for hub, recorder in zip(hubs[:2], recorders, strict=True):
        await hub.subscribe(recorder, "room", None, 0, lambda _: None)
    await asyncio.gather(*(hubs[i % 3].publish("room", b"{}") for i in range(60)))
    for _ in range(100):
        if all(len(r.offsets) == 60 for r in recorders):
            break
        await asyncio.sleep(0.05)
    assert recorders[0].offsets == list(range(1, 61))
    assert recorders[1].offsets == list(range(1, 61))


async def test_no_gap_or_duplicate_when_publishing_races_a_subscribe(backplanes):
    """Publishes keep landing while many subscribers join with `since`: each subscriber's
    reply plus its live messages must be exactly the offsets after its `since`."""
    publisher_bp, subscriber_bp = backplanes(), backplanes()
    publisher = ChannelHub(publisher_bp, "t")
    hub = ChannelHub(subscriber_bp, "t")
    epoch, _ = await publisher.publish("race", b"{}")
    stop = asyncio.Event()

    async def publish_steadily() -> None:
        while not stop.is_set():
            await publisher.publish("race", b"{}")
            await asyncio.sleep(0.001)  # stay well inside the history window

    task = asyncio.create_task(publish_steadily())
    joined: list[tuple[Recorder, int]] = []
    for since in range(1, 40):
        recorder = Recorder()

        def reply(result: SubscribeResult, recorder: Recorder = recorder) -> None:
            recorder.offsets.extend(p.offset for p in result.publications)

        result = await hub.subscribe(recorder, "race", Since(epoch, since), 0, reply)
        assert result.recovered, f"since={since} fell out of the window"
        joined.append((recorder, since))
        await asyncio.sleep(0.005)
    stop.set()
    await task
    _, top = await publisher.publish("race", b"{}")
    for _ in range(100):
        if all(r.offsets and r.offsets[-1] == top for r, _ in joined):
            break
        await asyncio.sleep(0.05)
    for recorder, since in joined:
        assert recorder.offsets == list(range(since + 1, top + 1)), f"since={since}"


async def test_lost_stream_changes_epoch_and_subscribers_are_told(backplanes, request):
    backplane = backplanes()
    hub = ChannelHub(backplane, "t")
    recorder = Recorder()
    old = await hub.subscribe(recorder, "room", None, 10, lambda _: None)
    await hub.publish("room", b"{}")
    # Lose the data, as a Redis restart without persistence would.
    if isinstance(backplane, RedisBackplane):
        await backplane._redis.flushdb()
    else:
        backplane.drop_stream("t:room")
    new_epoch, offset = await hub.publish("room", b"{}")
    assert new_epoch != old.epoch and offset == 1
    for _ in range(100):
        if recorder.replies:
            break
        await asyncio.sleep(0.05)
    [reply] = recorder.replies
    assert reply.epoch == new_epoch and reply.recovered is False
    assert [p.offset for p in reply.publications] == [1]
    # A client resuming with the old epoch is told it did not recover.
    late = Recorder()
    result = await hub.subscribe(late, "room", Since(old.epoch, 1), 10, lambda _: None)
    assert result.recovered is False and result.epoch == new_epoch


async def test_hub_fills_a_gap_in_live_delivery(backplanes):
    """A publication whose live message never arrived is read back from the stream."""
    backplane = backplanes()
    hub = ChannelHub(backplane, "t")
    recorder = Recorder()
    await hub.subscribe(recorder, "room", None, 0, lambda _: None)
    # Append offset 1 without live delivery, then publish offset 2 normally.
    if isinstance(backplane, RedisBackplane):
        meta, stream, _ = "wwws:{t:room}:m", "wwws:{t:room}:s", None
        await backplane._redis.hincrby(meta, "top", 1)
        await backplane._redis.xadd(stream, {"d": b'{"lost":1}', "t": 0}, id="1-0")
    else:
        stream = backplane._stream("t:room")
        stream.top += 1
        stream.entries.append(Publication(1, b'{"lost":1}'))
        stream.published_at.append(0.0)
    await hub.publish("room", b"{}")
    for _ in range(100):
        if len(recorder.offsets) == 2:
            break
        await asyncio.sleep(0.05)
    assert recorder.offsets == [1, 2]


async def test_presence_counts_users_once_and_expires(backplanes):
    backplane = backplanes()
    assert await backplane.presence_join("room", "bob", "r1/a", ttl=5) is True
    assert await backplane.presence_join("room", "bob", "r2/b", ttl=0.3) is False
    assert await backplane.presence_join("room", "carol", "r1/c", ttl=5) is True
    assert await backplane.presence_members("room") == {"bob", "carol"}
    assert await backplane.presence_contains("room", ["bob", "dave"]) == {
        "bob": True,
        "dave": False,
    }
    assert await backplane.presence_leave("room", "bob", "r1/a") is False  # r2/b remains
    assert await backplane.presence_members("room") == {"bob", "carol"}
    await asyncio.sleep(0.5)  # r2/b expires: its replica stopped refreshing
    assert await backplane.presence_members("room") == {"carol"}
    assert await backplane.presence_contains("room", ["bob"]) == {"bob": False}
    assert await backplane.presence_join("room", "bob", "r1/d", ttl=0.3) is True
    await backplane.presence_refresh([("room", "bob", "r1/d"), ("room", "x", "gone")], ttl=5)
    await asyncio.sleep(0.5)
    assert await backplane.presence_members("room") == {"bob", "carol"}
    assert await backplane.presence_leave("room", "bob", "r1/d") is True
    assert await backplane.presence_leave("room", "bob", "r1/d") is False
    assert await backplane.presence_members("other") == set()


@pytest.mark.redis
async def test_live_delivery_recovers_after_the_redis_connection_drops(redis_url):
    """Publications made while a replica's pub/sub connection is down are read back from
    the stream once it is re-established (memory has no connection to lose)."""
    backplane, other = RedisBackplane(redis_url), RedisBackplane(redis_url)
    await backplane._redis.flushdb()
    publisher = ChannelHub(other, "t")
    hub = ChannelHub(backplane, "t")
    recorder = Recorder()
    await hub.subscribe(recorder, "room", None, 0, lambda _: None)
    await publisher.publish("room", b"{}")
    await backplane._redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    for _ in range(5):
        await publisher.publish("room", b"{}")
    for _ in range(100):
        if len(recorder.offsets) == 6:
            break
        await asyncio.sleep(0.05)
    assert recorder.offsets == [1, 2, 3, 4, 5, 6]
    await backplane.close()
    await other.close()


@pytest.mark.redis
async def test_a_burst_of_subscribes_waits_for_redis_connections(redis_url):
    """More concurrent reads than the pool has connections: they queue, none fails."""
    backplane = RedisBackplane(redis_url)
    hub = ChannelHub(backplane, "burst")
    recorders = [Recorder() for _ in range(300)]
    results = await asyncio.gather(
        *(
            hub.subscribe(r, f"room{i % 150}", None, 10, lambda _: None)
            for i, r in enumerate(recorders)
        )
    )
    assert len(results) == 300 and all(r.epoch for r in results)
    await backplane.close()
