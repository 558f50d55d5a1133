"""The backplane contract (broker and presence), run against memory and real Redis alike."""

from __future__ import annotations

import asyncio
import contextlib
import os

import docker
import orjson
import pytest
import redis
from helpers import eventually
from redis_server import running_redis

from services.kit.backplane import MAX_OFFSET, NO_EPOCH, Publication, RedisBackplane
from services.kit.backplane.broker_redis import stream_keys
from services.kit.backplane.pipelined_redis import PipelinedRedis
from services.kit.hub import ChannelHub, SubscribeResult
from services.kit.protocol import Since


class Recorder:
    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.data: list[bytes] = []
        self.replies: list[SubscribeResult] = []

    def deliver(self, channel: str, publication: Publication, frame: bytes) -> None:
        self.offsets.append(publication.offset)
        self.data.append(publication.data)

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


# -- streams --------------------------------------------------------------------------
async def test_offsets_are_gapless_and_epoch_stable(backplanes):
    broker = backplanes().broker
    results = [await broker.publish("ch", b'{"n":%d}' % i) for i in range(5)]
    assert [offset for _, offset in results] == [1, 2, 3, 4, 5]
    assert len({epoch for epoch, _ in results}) == 1
    found = await broker.history("ch", since=2, limit=100)
    assert [p.offset for p in found.publications] == [3, 4, 5]
    assert [orjson.loads(p.data)["n"] for p in found.publications] == [2, 3, 4]
    assert found.top == 5 and found.first == 1 and found.covers(2)


async def test_one_history_read_pages_forward_and_back(backplanes):
    broker = backplanes().broker
    for _ in range(6):
        await broker.publish("ch", b"{}")

    async def offsets(**kwargs):
        return [p.offset for p in (await broker.history("ch", **kwargs)).publications]

    assert await offsets(limit=2) == [1, 2]  # forward from the start
    assert await offsets(since=4, limit=10) == [5, 6]
    assert await offsets(limit=2, reverse=True) == [5, 6]  # the newest, oldest first
    assert await offsets(since=5, limit=3, reverse=True) == [2, 3, 4]  # older than 5
    assert await offsets(since=1, limit=3, reverse=True) == []
    assert await offsets(since=0, limit=3, reverse=True) == []
    assert await offsets(since=MAX_OFFSET, limit=1, reverse=True) == [6]
    assert await offsets(since=MAX_OFFSET, limit=1) == []
    with pytest.raises(ValueError):
        await broker.history("ch", since=MAX_OFFSET + 1, limit=1)
    with pytest.raises(ValueError):
        await broker.history("ch", since=-1, limit=1, reverse=True)


async def test_reading_a_missing_channel_creates_nothing(backplanes, backplane_factory):
    broker = backplanes().broker
    found = await broker.history("quiet", limit=10, reverse=True)
    assert (found.epoch, found.top, found.publications) == (NO_EPOCH, 0, [])
    await broker.history("quiet", since=3, limit=10)
    assert backplane_factory.stored() == []
    epoch, offset = await broker.publish("quiet", b"{}")
    assert epoch != NO_EPOCH and offset == 1  # the first publication creates the stream
    assert (await broker.history("quiet", limit=10)).epoch == epoch


async def test_resume_from_before_the_first_publication_is_recovered(backplanes):
    """A subscriber that joined an empty channel (epoch "") resumes into the stream its
    first publication created; any other epoch that does not match is not recovered."""
    hub = ChannelHub(backplanes(), "t")
    empty = await hub.subscribe(Recorder(), "room", None, 10, lambda _: None)
    assert empty.epoch == NO_EPOCH and empty.offset == 0
    epoch, _ = await hub.publish("room", b"{}")
    await hub.publish("room", b"{}")
    resumed = await hub.subscribe(Recorder(), "room", Since(NO_EPOCH, 0), 10, lambda _: None)
    assert resumed.recovered and resumed.epoch == epoch
    assert [p.offset for p in resumed.publications] == [1, 2]
    stale = await hub.subscribe(Recorder(), "room", Since("other", 1), 10, lambda _: None)
    assert not stale.recovered and stale.epoch == epoch


async def test_history_window_is_bounded_by_count(backplanes):
    broker = backplanes(history_size=3).broker
    for _i in range(10):
        await broker.publish("ch", b"{}")
    found = await broker.history("ch", limit=100)
    assert [p.offset for p in found.publications] == [8, 9, 10]
    assert found.first == 8 and not found.covers(5) and found.covers(7)


async def test_history_window_is_bounded_by_age(backplanes):
    broker = backplanes(history_max_age=0.3).broker
    for _ in range(3):
        await broker.publish("ch", b"{}")

    async def aged_out() -> bool:
        return (await broker.history("ch", limit=100)).publications == []

    await eventually(aged_out, timeout=5, what="publications leave the window")
    await broker.publish("ch", b"{}")
    found = await broker.history("ch", limit=100)
    assert [p.offset for p in found.publications] == [4]
    assert found.first == 4 and not found.covers(0) and found.covers(3)


async def test_an_idempotency_key_publishes_once_within_the_window(backplanes):
    broker = backplanes(history_size=3).broker
    epoch, first = await broker.publish("ch", b'{"n":1}', idempotency_key="alice/k1")
    assert await broker.publish("ch", b'{"n":1}', idempotency_key="alice/k1") == (epoch, first)
    _, other = await broker.publish("ch", b'{"n":2}', idempotency_key="alice/k2")
    _, plain = await broker.publish("ch", b"{}")
    assert (first, other, plain) == (1, 2, 3)
    assert len((await broker.history("ch", limit=10)).publications) == 3
    for _ in range(3):  # offset 1 leaves the window, and with it its key
        await broker.publish("ch", b"{}")
    _, again = await broker.publish("ch", b'{"n":1}', idempotency_key="alice/k1")
    assert again == 7


async def test_idempotency_keys_are_kept_no_longer_than_their_entries(
    backplanes, backplane_factory
):
    """A client sending a new key with every publication cannot grow the store past the
    history window."""
    broker = backplanes(history_size=3).broker
    for n in range(20):
        await broker.publish("ch", b"{}", idempotency_key=f"alice/{n}")
    assert backplane_factory.idempotency_key_count("ch") == 3
    assert await broker.publish("ch", b"{}", idempotency_key="alice/19") == (
        (await broker.history("ch", limit=1, reverse=True)).epoch,
        20,
    )


async def test_ephemeral_publications_reach_every_replica_and_store_nothing(
    backplanes, backplane_factory
):
    one, two = backplanes(), backplanes()
    publisher, listener = ChannelHub(one, "t"), ChannelHub(two, "t")
    recorder = Recorder()
    await listener.subscribe_live(recorder, "#events")
    results = [await publisher.publish("#events", b'{"n":%d}' % i, history=False) for i in (1, 2)]
    assert results == [(NO_EPOCH, 0), (NO_EPOCH, 0)]
    await eventually(lambda: len(recorder.data) == 2, what="both events delivered")
    assert recorder.data == [b'{"n":1}', b'{"n":2}'] and recorder.offsets == [0, 0]
    assert backplane_factory.stored() == []
    found = await one.broker.history("t:#events", limit=10)
    assert found.epoch == NO_EPOCH and found.publications == []


async def test_concurrent_publishes_are_ordered_the_same_everywhere(backplanes):
    hubs = [ChannelHub(backplanes(), "t") for _ in range(3)]
    recorders = [Recorder(), Recorder()]
    for hub, recorder in zip(hubs[:2], recorders, strict=True):
        await hub.subscribe(recorder, "room", None, 0, lambda _: None)
    await asyncio.gather(*(hubs[i % 3].publish("room", b"{}") for i in range(60)))
    await eventually(lambda: all(len(r.offsets) == 60 for r in recorders))
    assert recorders[0].offsets == list(range(1, 61))
    assert recorders[1].offsets == list(range(1, 61))


async def test_no_gap_or_duplicate_when_publishing_races_a_subscribe(backplanes):
    """Publishes keep landing while many subscribers join with `since`: each subscriber's
    reply plus its live messages must be exactly the offsets after its `since`."""
    publisher = ChannelHub(backplanes(), "t")
    hub = ChannelHub(backplanes(), "t")
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
    await eventually(lambda: all(r.offsets and r.offsets[-1] == top for r, _ in joined))
    for recorder, since in joined:
        assert recorder.offsets == list(range(since + 1, top + 1)), f"since={since}"


async def test_lost_stream_changes_epoch_and_subscribers_are_told(backplanes, backplane_factory):
    hub = ChannelHub(backplanes(), "t")
    recorder = Recorder()
    await hub.subscribe(recorder, "room", None, 10, lambda _: None)
    old_epoch, _ = await hub.publish("room", b"{}")
    backplane_factory.flush()  # as a Redis restart without persistence would
    new_epoch, offset = await hub.publish("room", b"{}")
    assert new_epoch != old_epoch and offset == 1
    await eventually(lambda: recorder.replies, what="the subscriber is told")
    [reply] = recorder.replies
    assert reply.epoch == new_epoch and reply.recovered is False
    assert [p.offset for p in reply.publications] == [1]
    # A client resuming with the old epoch is told it did not recover.
    late = Recorder()
    result = await hub.subscribe(late, "room", Since(old_epoch, 1), 10, lambda _: None)
    assert result.recovered is False and result.epoch == new_epoch


async def test_hub_fills_a_gap_in_live_delivery(backplanes, backplane_factory):
    """A publication whose live message never arrived is read back from the stream."""
    hub = ChannelHub(backplanes(), "t")
    recorder = Recorder()
    await hub.subscribe(recorder, "room", None, 0, lambda _: None)
    await hub.publish("room", b"{}")
    backplane_factory.append_without_delivery("t:room", b'{"lost":1}')
    await hub.publish("room", b"{}")
    await eventually(lambda: len(recorder.offsets) == 3, what="the gap is filled")
    assert recorder.offsets == [1, 2, 3] and recorder.data[1] == b'{"lost":1}'


# -- presence -----------------------------------------------------------------------
async def test_presence_counts_users_once_and_expires(backplanes):
    presence = backplanes().presence
    assert await presence.join("room", "bob", "r1/a", ttl=5) is True
    assert await presence.join("room", "bob", "r2/b", ttl=0.3) is False
    assert await presence.join("room", "carol", "r1/c", ttl=5) is True
    assert await presence.members("room") == {"bob", "carol"}
    assert await presence.contains("room", ["bob", "dave"]) == {"bob": True, "dave": False}
    assert await presence.leave("room", "bob", "r1/a") is False  # r2/b remains
    assert await presence.members("room") == {"bob", "carol"}

    async def bob_expired() -> bool:  # r2/b expires: its replica stopped refreshing
        return await presence.members("room") == {"carol"}

    await eventually(bob_expired, timeout=5)
    assert await presence.contains("room", ["bob"]) == {"bob": False}
    assert await presence.join("room", "bob", "r1/d", ttl=5) is True
    assert await presence.leave("room", "bob", "r1/d") is True
    assert await presence.leave("room", "bob", "r1/d") is False
    assert await presence.members("other") == set()


async def test_a_burst_of_joins_and_leaves_counts_each_user_once(backplanes, backplane_factory):
    """50 connections of 10 users join at once, then leave at once: one user's first join
    and last leave are the ones reported, whatever was sent together. On Redis the burst
    goes as a few script calls, not one per connection (script_batch.py)."""
    presence = backplanes().presence
    conns = [(f"u{n % 10}", f"r1/c{n}") for n in range(50)]
    calls_before = _script_calls(backplane_factory)
    joined = await asyncio.gather(*(presence.join("room", u, c, ttl=5) for u, c in conns))
    firsts = [user for (user, _), first in zip(conns, joined, strict=True) if first]
    assert sorted(firsts) == [f"u{n}" for n in range(10)]
    assert await presence.members("room") == {f"u{n}" for n in range(10)}
    left = await asyncio.gather(*(presence.leave("room", u, c) for u, c in conns))
    lasts = [user for (user, _), last in zip(conns, left, strict=True) if last]
    assert sorted(lasts) == [f"u{n}" for n in range(10)]
    assert await presence.members("room") == set()
    if backplane_factory.kind == "redis":
        # 100 joins and leaves, 2 member reads: a handful of calls, not 102
        assert _script_calls(backplane_factory) - calls_before <= 10


def _script_calls(backplane_factory) -> int:  # type: ignore[no-untyped-def]
    if backplane_factory.kind != "redis":
        return 0
    stats = backplane_factory.client().info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0)) + int(
        stats.get("cmdstat_eval", {}).get("calls", 0)
    )


async def test_presence_refresh_extends_and_re_creates_lost_entries(backplanes, backplane_factory):
    presence = backplanes().presence
    await presence.join("room", "bob", "r1/a", ttl=5)
    await presence.join("room", "bob", "r1/b", ttl=5)
    entries = [("room", "bob", "r1/a"), ("room", "bob", "r1/b"), ("room", "carol", "r1/c")]
    # carol's entry was lost (she is reported back once), bob's are extended
    assert await presence.refresh(entries, ttl=5) == [("room", "carol", "r1/c")]
    assert await presence.members("room") == {"bob", "carol"}
    backplane_factory.flush()  # the store lost everything
    assert await presence.members("room") == set()
    restored = await presence.refresh(entries, ttl=5)
    assert restored == [("room", "bob", "r1/a"), ("room", "carol", "r1/c")]
    assert await presence.members("room") == {"bob", "carol"}
    assert await presence.leave("room", "bob", "r1/a") is False  # r1/b came back too


# -- Redis only -----------------------------------------------------------------------
@pytest.mark.redis
async def test_live_delivery_recovers_after_the_redis_connection_drops(redis_url):
    """Publications made while a replica's pub/sub connection is down are read back from
    the stream once it is re-established (memory has no connection to lose)."""
    backplane, other = RedisBackplane(redis_url), RedisBackplane(redis_url)
    await backplane.connection.client.flushdb()
    publisher = ChannelHub(other, "t")
    hub = ChannelHub(backplane, "t")
    recorder = Recorder()
    await hub.subscribe(recorder, "room", None, 0, lambda _: None)
    await publisher.publish("room", b"{}")
    await backplane.connection.client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    for _ in range(5):
        await publisher.publish("room", b"{}")
    await eventually(lambda: len(recorder.offsets) == 6, what="the missed ones are read back")
    assert recorder.offsets == [1, 2, 3, 4, 5, 6]
    await backplane.close()
    await other.close()


@pytest.mark.redis
async def test_a_stream_written_with_durable_acks_stays_readable_after_they_are_off(redis_url):
    """Readers stop at a durable stream's `durable` mark (what the replicas hold); a
    deployment that turns durable acks off again must not leave later publications
    behind that mark, which nothing raises any more."""
    backplane = RedisBackplane(redis_url)
    await backplane.connection.client.flushdb()
    hub = ChannelHub(backplane, "t")
    await hub.publish("room", b'{"n":1}')
    meta, _, _ = stream_keys(hub.backplane_channel("room"))
    # as a durable publisher leaves it: held by the replicas up to offset 1
    await backplane.connection.client.hset(meta, "durable", 1)
    for n in (2, 3):
        await hub.publish("room", b'{"n":%d}' % n)
    read = await backplane.broker.history(hub.backplane_channel("room"), since=0, limit=10)
    assert (read.top, [p.offset for p in read.publications]) == (3, [1, 2, 3])
    await backplane.close()


def _container_ip(url: str) -> str:
    """The address other containers reach the test Redis at ``url`` by."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    client = docker.from_env()
    try:
        for container in client.containers.list(filters={"label": "wwws.test=redis"}):
            if container.ports["6379/tcp"][0]["HostPort"] == port:
                return str(container.attrs["NetworkSettings"]["IPAddress"])
    finally:
        client.close()
    raise LookupError(url)


def _replica_online(url: str) -> bool:
    """A replica is attached and done with its first sync (WAIT counts only those)."""
    replication = redis.Redis.from_url(url).info("replication")
    return bool(replication.get("slave0", {}).get("state") == "online")


@pytest.mark.redis
async def test_a_durable_publication_is_confirmed_on_the_server_that_stored_it():
    """The `durable` mark (which history reads stop at) must rise where the publication
    was stored and waited for, even when the pipelined connection reaches another server
    (it asks Sentinel on its own, and across a failover the two may differ)."""
    if os.environ.get("WWWS_TEST_REDIS_URL"):
        pytest.skip("needs three Redis servers of its own (Docker)")
    with contextlib.ExitStack() as servers:
        primary, replica, stray = (servers.enter_context(running_redis()) for _ in range(3))
        redis.Redis.from_url(replica).replicaof(_container_ip(primary), 6379)
        backplane = RedisBackplane(f"{primary}?ack_replicas=1&ack_timeout_ms=2000")
        stray_port = int(stray.rsplit(":", 1)[1].split("/")[0])

        async def stray_address() -> tuple[str, int]:
            return "127.0.0.1", stray_port

        connection = backplane.connection
        assert connection.pipelined is not None
        await connection.pipelined.close()
        connection.pipelined = PipelinedRedis(stray_address)
        try:
            hub = ChannelHub(backplane, "t")
            await eventually(
                lambda: _replica_online(primary), timeout=20, what="the replica is in sync"
            )
            _, top = await hub.publish("room", b'{"n":1}')
            meta, _, _ = stream_keys(hub.backplane_channel("room"))
            assert int(await connection.client.hget(meta, "durable") or 0) == top
        finally:
            await backplane.close()


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
    assert len(results) == 300 and all(r.offset == 0 for r in results)
    await backplane.close()
