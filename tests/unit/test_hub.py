"""The hub on the memory backplane: streamed and ephemeral channels, epochs, gaps."""

from __future__ import annotations

import asyncio

from fakes import Recorder

from services.kit.backplane import NO_EPOCH, MemoryBackplane, MemoryState
from services.kit.hub import ChannelHub
from services.kit.protocol import Since


def replicas(count: int) -> tuple[MemoryState, list[ChannelHub]]:
    state = MemoryState()
    return state, [ChannelHub(MemoryBackplane(state), "svc") for _ in range(count)]


async def subscribe(hub: ChannelHub, channel: str) -> Recorder:
    recorder = Recorder()
    await hub.subscribe(recorder, channel, None, 10, lambda _: None)
    return recorder


async def test_ephemeral_publications_are_delivered_without_offsets_or_gap_filling():
    state, (one, two) = replicas(2)
    recorder = Recorder()
    await two.subscribe_live(recorder, "#events")
    for n in range(3):
        assert await one.publish("#events", b'{"n":%d}' % n, history=False) == (NO_EPOCH, 0)
    assert [p.data for p in recorder.publications] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    assert recorder.replies == [] and state.streams == {}
    await two.unsubscribe(recorder, "#events")
    assert state.listeners == {} and two.channel_count == 0


async def test_the_first_publication_of_an_empty_channel_is_not_an_epoch_change():
    _, (hub,) = replicas(1)
    recorder = await subscribe(hub, "room")
    epoch, _ = await hub.publish("room", b"{}")
    await hub.publish("room", b"{}")
    assert recorder.offsets == [1, 2] and recorder.replies == []
    late = await subscribe(hub, "room")
    assert hub.channel_count == 1 and late.offsets == []
    assert (await hub.history("room", None, 10)).epoch == epoch


async def test_a_lost_stream_restarts_its_subscribers_under_the_new_epoch():
    state, (hub,) = replicas(1)
    recorder = await subscribe(hub, "room")
    old, _ = await hub.publish("room", b"{}")
    state.drop_stream("svc:room")
    new, offset = await hub.publish("room", b"{}")
    assert new != old and offset == 1
    # the restart runs as a task: the reply arrives once the loop gets to it
    await _settle()
    [reply] = recorder.replies
    assert (reply.epoch, reply.recovered, reply.offset) == (new, False, 1)


async def test_a_lost_live_message_is_read_back_in_order():
    state, (hub,) = replicas(1)
    recorder = await subscribe(hub, "room")
    await hub.publish("room", b"{}")
    state.append_without_delivery("svc:room", b'{"lost":1}')
    await hub.publish("room", b"{}")
    await _settle()
    assert recorder.offsets == [1, 2, 3]
    assert recorder.publications[1].data == b'{"lost":1}'


async def _settle() -> None:
    """Let the hub's spawned tasks (memory reads complete without waiting) run to the end."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_an_epoch_restart_whose_read_fails_is_retried_and_delivery_goes_on():
    """Redis lost its data and is still loading when the hub reads the new epoch: the
    subscribers must not be left waiting for a read that never comes (they would get
    nothing more, ever)."""
    state, (hub,) = replicas(1)
    recorder = await subscribe(hub, "room")
    await hub.publish("room", b"{}")
    state.flush()
    state.failing_reads = 3
    new, _ = await hub.publish("room", b'{"n":1}')
    for _ in range(50):
        if recorder.replies:
            break
        await asyncio.sleep(0.05)
    assert state.failing_reads == 0
    [reply] = recorder.replies
    assert (reply.epoch, reply.recovered, reply.offset) == (new, False, 1)
    await hub.publish("room", b'{"n":2}')
    assert recorder.offsets[-1] == 2
    assert recorder.publications[-1].data == b'{"n":2}'


async def test_a_subscriber_that_leaves_during_an_epoch_restart_is_not_brought_back():
    state, (hub,) = replicas(1)
    stays = await subscribe(hub, "room")
    leaves = await subscribe(hub, "room")
    await hub.publish("room", b"{}")
    state.flush()
    state.failing_reads = 2
    await hub.publish("room", b"{}")
    await asyncio.sleep(0)  # the restart has started and waits to retry its read
    await hub.unsubscribe(leaves, "room")
    for _ in range(50):
        if stays.replies:
            break
        await asyncio.sleep(0.05)
    assert len(stays.replies) == 1 and leaves.replies == []
    await hub.publish("room", b"{}")
    assert stays.offsets[-1] == 2 and leaves.offsets == [1]


async def test_a_gap_whose_read_fails_is_filled_once_the_backplane_answers():
    state, (hub,) = replicas(1)
    recorder = await subscribe(hub, "room")
    await hub.publish("room", b"{}")
    state.append_without_delivery("svc:room", b'{"lost":1}')
    state.failing_reads = 3
    await hub.publish("room", b"{}")
    for _ in range(50):
        if len(recorder.offsets) == 3:
            break
        await asyncio.sleep(0.05)
    assert recorder.offsets == [1, 2, 3] and state.failing_reads == 0


async def test_a_resume_from_a_lost_stream_gets_the_whole_new_stream_not_its_window():
    """The client followed a stream Redis lost; the new one already has more than the
    window: it has seen none of it, so it gets all of it (and recovered: false)."""
    state, (hub,) = replicas(1)
    old, _ = await hub.publish("room", b"{}")
    state.flush()
    for n in range(25):
        new, _ = await hub.publish("room", b'{"n":%d}' % n)
    recorder = Recorder()
    result = await hub.subscribe(recorder, "room", Since(old, 1), 10, lambda _: None)
    assert (result.epoch, result.recovered, result.offset) == (new, False, 25)
    assert [p.offset for p in result.publications] == list(range(1, 26))
    # a fresh subscriber (no since) still gets the window only
    latest = await hub.subscribe(Recorder(), "room", None, 10, lambda _: None)
    assert [p.offset for p in latest.publications] == list(range(16, 26))


class Queueing(Recorder):
    """A subscriber that says it queued a client frame, as a connection does."""

    def deliver(self, channel, publication, frame):  # type: ignore[no-untyped-def]
        super().deliver(channel, publication, frame)
        return True


async def test_frames_queued_for_clients_are_counted_once_per_fan_out():
    counts: list[int] = []
    hub = ChannelHub(MemoryBackplane(MemoryState()), "svc", on_delivered=counts.append)
    clients = [Queueing() for _ in range(30)]
    for client in clients:
        await hub.subscribe(client, "room", None, 10, lambda _: None)
    await hub.subscribe(Recorder(), "room", None, 10, lambda _: None)  # not a client frame
    await hub.publish("room", b"{}")
    await hub.publish("room", b"{}")
    assert counts == [30, 30]  # one call per publication, not one per frame
    assert all(client.offsets == [1, 2] for client in clients)


# -- the recent window: subscribers of a channel the replica follows, without a read ------
def counted(trust: float = 5.0) -> tuple[MemoryState, ChannelHub, list[str]]:
    """A hub whose stream reads are recorded, to see which subscribes read Redis."""
    state = MemoryState()
    backplane = MemoryBackplane(state)
    reads: list[str] = []
    history = backplane.broker.history

    async def recording(channel, since=None, limit=100, reverse=False):  # type: ignore[no-untyped-def]
        reads.append(channel)
        return await history(channel, since=since, limit=limit, reverse=reverse)

    backplane.broker.history = recording  # type: ignore[method-assign]
    return state, ChannelHub(backplane, "svc", recent_trust_seconds=trust), reads


async def test_a_subscriber_of_a_followed_channel_gets_the_window_a_read_would_give():
    _, hub, reads = counted()
    first = await subscribe(hub, "room")  # reads the stream (empty) and keeps the window
    for n in range(12):
        await hub.publish("room", b'{"n":%d}' % n)
    assert first.offsets == list(range(1, 13))
    reads.clear()
    result = await hub.subscribe(Recorder(), "room", None, 10, lambda _: None)
    assert reads == []  # answered from the window the live publications kept
    read = await hub.history("room", None, 10)
    assert (result.epoch, result.offset, result.recovered) == (read.epoch, 12, False)
    assert result.publications == read.publications  # offsets 3..12, the same bytes
    # a different window size is not what was kept: it is read
    reads.clear()
    other = await hub.subscribe(Recorder(), "room", None, 5, lambda _: None)
    assert reads == ["svc:room"] and [p.offset for p in other.publications] == [8, 9, 10, 11, 12]


async def test_a_resume_inside_the_window_is_answered_from_it_and_an_older_one_is_read():
    _, hub, reads = counted()
    await subscribe(hub, "room")
    for n in range(12):
        epoch, _ = await hub.publish("room", b'{"n":%d}' % n)
    reads.clear()
    near = await hub.subscribe(Recorder(), "room", Since(epoch, 9), 10, lambda _: None)
    assert reads == [] and near.recovered and [p.offset for p in near.publications] == [10, 11, 12]
    current = await hub.subscribe(Recorder(), "room", Since(epoch, 12), 10, lambda _: None)
    assert reads == [] and current.recovered and current.publications == []
    far = await hub.subscribe(Recorder(), "room", Since(epoch, 1), 10, lambda _: None)
    assert reads == ["svc:room"]  # offset 2 is older than the window: the stream is read
    assert far.recovered and [p.offset for p in far.publications] == list(range(2, 13))
    reads.clear()
    other = await hub.subscribe(Recorder(), "room", Since("another", 11), 10, lambda _: None)
    assert reads and not other.recovered  # another epoch: read, never guessed


async def test_a_lost_live_message_drops_the_window_and_the_next_subscriber_reads_it():
    state, hub, reads = counted()
    await subscribe(hub, "room")
    await hub.publish("room", b"{}")
    state.append_without_delivery("svc:room", b'{"lost":1}')
    await hub.publish("room", b"{}")  # offset 3 arrives; 2 is filled from the stream
    await _settle()
    reads.clear()
    late = await hub.subscribe(Recorder(), "room", None, 10, lambda _: None)
    assert [p.offset for p in late.publications] == [1, 2, 3]
    assert late.publications[1].data == b'{"lost":1}'
    # the fill delivered 2 in order, so the window could follow: either way, exact
    assert reads in ([], ["svc:room"])


async def test_a_change_without_a_live_message_is_seen_once_the_window_is_no_longer_trusted():
    state, hub, reads = counted(trust=0.05)
    await subscribe(hub, "room")
    await hub.publish("room", b"{}")
    state.drop_stream("svc:room")  # lost without a word, as an operator's FLUSHALL would
    stale = await hub.subscribe(Recorder(), "room", None, 10, lambda _: None)
    assert [p.offset for p in stale.publications] == [1]  # within the trust bound
    await asyncio.sleep(0.1)
    reads.clear()
    fresh = await hub.subscribe(Recorder(), "room", None, 10, lambda _: None)
    assert reads == ["svc:room"] and (fresh.epoch, fresh.offset, fresh.publications) == (
        NO_EPOCH,
        0,
        [],
    )


async def test_with_no_trust_every_subscriber_reads_the_stream():
    _, hub, reads = counted(trust=0)
    for _ in range(3):
        await subscribe(hub, "room")
    assert reads == ["svc:room"] * 3


async def test_a_window_read_while_a_live_publication_overtakes_it_is_not_kept():
    """The first subscriber's read and a publication cross: the read saw 1, the live
    feed has delivered 2 meanwhile. The kept window would lack 2: it is not kept."""
    _, hub, reads = counted()
    backplane_history = hub._broker.history  # the recording one

    async def crossing(channel, since=None, limit=100, reverse=False):  # type: ignore[no-untyped-def]
        read = await backplane_history(channel, since=since, limit=limit, reverse=reverse)
        if len(reads) == 1:
            await hub.publish("room", b'{"n":2}')  # delivered live before the read returns
        return read

    hub._broker.history = crossing  # type: ignore[method-assign]
    await hub.publish("room", b'{"n":1}')
    first = await subscribe(hub, "room")
    assert first.offsets == [2]
    second = await hub.subscribe(Recorder(), "room", None, 10, lambda _: None)
    assert len(reads) == 2  # read again: the first read was not what had been delivered
    assert [p.offset for p in second.publications] == [1, 2]
