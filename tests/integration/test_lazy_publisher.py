"""Lazy publisher PC (subscriber-primary joins), through real servers (embedded + official).

Like the official SDKs, a subscriber-primary join negotiates only the subscriber PC; the
publisher PC is negotiated on first need (first data packet, first published track) and
the first data/frames sent right after that must still arrive, complete and in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_room_media import Tone, peak_frequency, remote_pub, wait_track

from aiolivekit import DataPacket, LocalAudioTrack, Room, TrackPublishOptions, TrackSource
from aiolivekit.engine.engine import RtcEngine
from aiolivekit.errors import PublishDataError

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

TIMEOUT = 15.0


async def _join(server: Any, rooms: list[Room], identity: str) -> Room:
    room = Room()
    rooms.append(room)
    await asyncio.wait_for(room.connect(server.url, server.token(identity)), 30)
    return room


def _engine(room: Room) -> RtcEngine:
    engine = room._engine
    assert engine is not None
    return engine


def _collect_data(room: Room) -> tuple[list[DataPacket], asyncio.Event]:
    got: list[DataPacket] = []
    changed = asyncio.Event()

    def on_data(packet: DataPacket) -> None:
        got.append(packet)
        changed.set()
    room.on("data_received", on_data)
    return got, changed


async def _wait_count(got: list[Any], changed: asyncio.Event, n: int) -> None:
    async def loop() -> None:
        while len(got) < n:
            changed.clear()
            await changed.wait()
    await asyncio.wait_for(loop(), TIMEOUT)


async def _wait_participant(room: Room, identity: str) -> None:
    for _ in range(int(TIMEOUT / 0.02)):
        if identity in room.remote_participants:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{identity} never joined")


async def test_connect_leaves_publisher_unnegotiated(any_server: Any, rooms: list[Room]) -> None:
    alice = await _join(any_server, rooms, "alice")
    engine = _engine(alice)
    join = engine.session.join
    assert join is not None and join.subscriber_primary
    assert engine.subscriber is not None and engine.subscriber.pc.connectionState == "connected"
    # the server's data channels are open once connect returns (server data is not lost)
    # (livekit-server also opens a "_data_track" channel)
    assert [engine.sub_channels[k].readyState for k in ("_reliable", "_lossy")] == ["open"] * 2
    assert engine.publisher is not None
    pc = engine.publisher.pc
    # no publisher offer was created (so none was sent), no ICE/DTLS running on it
    assert pc.localDescription is None and pc.signalingState == "stable"
    assert pc.connectionState == "new" and pc.iceGatheringState == "new"
    await asyncio.sleep(0.5)  # nothing brings it up on its own
    assert pc.connectionState == "new" and pc.localDescription is None
    # first need: the publisher comes up (and only once)
    await engine.ensure_publisher_connected()
    assert pc.connectionState == "connected" and engine.publisher_ready()
    offer_sdp = pc.localDescription.sdp
    await engine.ensure_publisher_connected()
    assert pc.localDescription.sdp == offer_sdp  # already up: no renegotiation
    assert alice.isconnected()


async def test_concurrent_ensure_shares_one_negotiation(any_server: Any,
                                                        rooms: list[Room]) -> None:
    alice = await _join(any_server, rooms, "alice")
    engine = _engine(alice)
    offers = 0
    orig = engine.session.send_offer

    def counting(sdp: str) -> int:
        nonlocal offers
        offers += 1
        return orig(sdp)
    engine.session.send_offer = counting  # type: ignore[method-assign]
    await asyncio.gather(*(engine.ensure_publisher_connected() for _ in range(5)))
    assert offers == 1
    assert engine.publisher_ready()


async def test_first_publish_data_right_after_connect(any_server: Any,
                                                      rooms: list[Room]) -> None:
    bob = await _join(any_server, rooms, "bob")
    got, changed = _collect_data(bob)
    alice = await _join(any_server, rooms, "alice")
    await _wait_participant(bob, "alice")  # so that bob can attribute the packet
    assert _engine(alice).publisher.pc.connectionState == "new"  # type: ignore[union-attr]
    payload = bytes(range(256)) * 3 + b"first packet"
    await alice.local_participant.publish_data(payload, reliable=True, topic="t")
    await _wait_count(got, changed, 1)
    assert got[0].data == payload and got[0].topic == "t"
    assert got[0].participant is not None and got[0].participant.identity == "alice"
    assert _engine(alice).publisher_ready()


async def test_concurrent_reliable_sends_right_after_connect_in_order(
        any_server: Any, rooms: list[Room]) -> None:
    bob = await _join(any_server, rooms, "bob")
    got, changed = _collect_data(bob)
    alice = await _join(any_server, rooms, "alice")
    assert _engine(alice).publisher is not None
    assert _engine(alice).publisher.pc.connectionState == "new"  # type: ignore[union-attr]
    lp = alice.local_participant
    msgs = [f"msg-{i:02d}-".encode() + bytes([i]) * (i * 50) for i in range(20)]
    await asyncio.gather(*(lp.publish_data(m, reliable=True) for m in msgs))
    await _wait_count(got, changed, 20)
    await asyncio.sleep(0.3)  # nothing extra (duplicates) arrives
    assert [p.data for p in got] == msgs


async def test_first_publish_track_sends_immediately(any_server: Any, rooms: list[Room]) -> None:
    bob = await _join(any_server, rooms, "bob")
    alice = await _join(any_server, rooms, "alice")
    engine = _engine(alice)
    assert engine.publisher is not None and engine.publisher.pc.connectionState == "new"
    tone_src = None
    tone: Tone | None = None
    try:
        tone = Tone(440.0)
        tone_src = tone.source
        track = LocalAudioTrack.create_audio_track("mic", tone_src)
        await alice.local_participant.publish_track(
            track, TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE))
        # publish_track returned: the transport is up, frames captured now are sent
        assert engine.publisher.pc.connectionState == "connected"
        senders = [t.sender for t in engine.publisher.pc.getTransceivers()
                   if t.sender.track is not None]
        assert senders and all(s.transport.state == "connected" for s in senders)
        pub = await remote_pub(bob, "alice")
        remote = await wait_track(pub)
        freq = await peak_frequency(remote)
        assert abs(freq - 440.0) < 15, freq
    finally:
        if tone is not None:
            await tone.close()


async def test_large_first_packet_uses_advertised_limit(any_server: Any,
                                                        rooms: list[Room]) -> None:
    """The reliable size limit is the server's (known once the publisher is up), also for
    the very first packet, which is encoded only once the lazy publisher connected."""
    bob = await _join(any_server, rooms, "bob")
    got, changed = _collect_data(bob)
    alice = await _join(any_server, rooms, "alice")
    await _wait_participant(bob, "alice")
    engine = _engine(alice)
    assert engine.publisher is not None and engine.publisher.pc.connectionState == "new"
    assert engine.reliable_max_message_size() == 65536  # not advertised yet
    payload = bytes(i % 251 for i in range(100_000))
    if any_server.kind == "livekit-server":
        # pion advertises a=max-message-size:65535: refused, but by the server's limit
        with pytest.raises(PublishDataError, match="limit of 65535 bytes"):
            await alice.local_participant.publish_data(payload, reliable=True)
        assert engine.publisher.pc.connectionState == "connected"
        assert engine.reliable_max_message_size() == 65535
        return
    # our server advertises a=max-message-size:262144
    await alice.local_participant.publish_data(payload, reliable=True)
    assert engine.reliable_max_message_size() == 262144
    await _wait_count(got, changed, 1)
    assert got[0].data == payload
