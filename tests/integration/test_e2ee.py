"""End-to-end encryption between aiolivekit rooms through both servers (issue 17): the
tone (FFT) and video counters decode with the same shared key, a wrong key reports
DECRYPTION_FAILED and decodes nothing, key rotation mid-call, per-participant keys."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import numpy as np
import pytest
from test_room_media import (
    RATE,
    Recorder,
    Tone,
    _join,
    counter_frame,
    peak_frequency,
    read_counter,
    remote_pub,
    wait_track,
)

from aiolivekit import (
    AudioStream,
    E2EEOptions,
    KeyProviderOptions,
    LocalAudioTrack,
    LocalVideoTrack,
    Room,
    TrackPublishOptions,
    TrackSource,
    VideoBufferType,
    VideoCodec,
    VideoSource,
    VideoStream,
)
from aiolivekit.types import EncryptionState, EncryptionType, RoomOptions

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

KEY = b"aiolivekit-e2ee-shared-key-0123456789"


def _enc(key: bytes | None = KEY, **kw: Any) -> RoomOptions:
    return RoomOptions(encryption=E2EEOptions(KeyProviderOptions(shared_key=key, **kw)))


async def _max_amplitude(track: Any, seconds: float) -> tuple[int, int]:
    """(frames received, max |sample|) over ``seconds``."""
    stream = AudioStream(track, sample_rate=RATE, num_channels=1)
    frames = 0
    peak = 0

    async def collect() -> None:
        nonlocal frames, peak
        async for ev in stream:
            frames += 1
            peak = max(peak, int(np.abs(np.frombuffer(ev.frame.data, np.int16)).max(initial=0)))
    try:
        await asyncio.wait_for(collect(), seconds)
    except asyncio.TimeoutError:
        pass
    finally:
        await stream.aclose()
    return frames, peak


@pytest.mark.compat("e2ee", client="aiolivekit")
async def test_audio_shared_key_tone_and_events(any_server: Any, rooms: list[Room]) -> None:
    bob = await _join(any_server, rooms, "bob", _enc())
    rec = Recorder(bob, "e2ee_state_changed", "participant_encryption_status_changed")
    alice = await _join(any_server, rooms, "alice", _enc())
    assert alice.e2ee_manager.enabled and alice.e2ee_manager.key_provider is not None
    assert alice.e2ee_manager.key_provider.export_shared_key(0) == KEY
    tone = Tone(440)
    try:
        pub = await alice.local_participant.publish_track(
            LocalAudioTrack.create_audio_track("mic", tone.source),
            TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE))
        assert pub.encryption_type == EncryptionType.GCM
        rpub = await remote_pub(bob, "alice")
        assert rpub.encryption_type == EncryptionType.GCM
        track = await wait_track(rpub)
        assert abs(await peak_frequency(track) - 440) < 15
        await rec.wait_for(lambda: ("e2ee_state_changed" in rec.names()))
        states = [args[1] for name, args in rec.events if name == "e2ee_state_changed"]
        assert states[0] == EncryptionState.OK and EncryptionState.DECRYPTION_FAILED not in states
        assert rec.events[0][0] == "participant_encryption_status_changed"
        assert rec.events[0][1][0].identity == "alice" and rec.events[0][1][1] is True
        cryptors = {(c.participant_identity, c.track_sid)
                    for c in bob.e2ee_manager.frame_cryptors()}
        assert cryptors == {("alice", rpub.sid)}
        assert [(c.participant_identity, c.track_sid, c.enabled)
                for c in alice.e2ee_manager.frame_cryptors()] == [("alice", pub.sid, True)]
    finally:
        await tone.close()


@pytest.mark.compat("e2ee", client="aiolivekit")
async def test_audio_wrong_key_reports_failure_and_decodes_nothing(
        any_server: Any, rooms: list[Room]) -> None:
    bob = await _join(any_server, rooms, "bob", _enc(b"not-the-right-key"))
    rec = Recorder(bob, "e2ee_state_changed")
    alice = await _join(any_server, rooms, "alice", _enc())
    tone = Tone(440)
    try:
        await alice.local_participant.publish_track(
            LocalAudioTrack.create_audio_track("mic", tone.source),
            TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE))
        track = await wait_track(await remote_pub(bob, "alice"))
        frames, peak = await _max_amplitude(track, 3.0)
        assert peak < 500, (frames, peak)  # no tone, no decoded noise
        await rec.wait_for(lambda: any(a[1] == EncryptionState.DECRYPTION_FAILED
                                       for _, a in rec.events))
        assert rec.events[0][1][0].identity == "alice"
        assert all(a[1] != EncryptionState.OK for _, a in rec.events)
        assert bob.isconnected()
    finally:
        await tone.close()


@pytest.mark.compat("e2ee", client="aiolivekit")
async def test_unencrypted_receiver_drops_encrypted_track(any_server: Any,
                                                          rooms: list[Room]) -> None:
    bob = await _join(any_server, rooms, "bob")
    alice = await _join(any_server, rooms, "alice", _enc())
    tone = Tone(440)
    try:
        await alice.local_participant.publish_track(
            LocalAudioTrack.create_audio_track("mic", tone.source),
            TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE))
        rpub = await remote_pub(bob, "alice")
        assert rpub.encryption_type == EncryptionType.GCM
        frames, peak = await _max_amplitude(await wait_track(rpub), 2.0)
        assert peak < 500, (frames, peak)
    finally:
        await tone.close()


@pytest.mark.compat("e2ee", client="aiolivekit")
async def test_key_rotation_mid_call(any_server: Any, rooms: list[Room]) -> None:
    """Both sides set a new shared key at index 1 (receiver first): the sender moves to
    it and the tone goes on; a receiver that only has the old key loses it."""
    bob = await _join(any_server, rooms, "bob", _enc())
    carol = await _join(any_server, rooms, "carol", _enc())
    alice = await _join(any_server, rooms, "alice", _enc())
    tone = Tone(440)
    try:
        await alice.local_participant.publish_track(
            LocalAudioTrack.create_audio_track("mic", tone.source),
            TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE))
        btrack = await wait_track(await remote_pub(bob, "alice"))
        ctrack = await wait_track(await remote_pub(carol, "alice"))
        assert abs(await peak_frequency(btrack) - 440) < 15
        new = b"rotated-key-rotated-key-rotated!"
        assert bob.e2ee_manager.key_provider is not None
        assert alice.e2ee_manager.key_provider is not None
        bob.e2ee_manager.key_provider.set_shared_key(new, 1)
        alice.e2ee_manager.key_provider.set_shared_key(new, 1)
        assert [c.key_index for c in alice.e2ee_manager.frame_cryptors()] == [1]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert abs(await peak_frequency(btrack, 0.5) - 440) < 15
        assert loop.time() - t0 < 3.0  # recovered within 3 s (in practice at once)
        _, peak = await _max_amplitude(ctrack, 1.5)
        assert peak < 500  # carol never got key 1
    finally:
        await tone.close()


@pytest.mark.compat("e2ee", client="aiolivekit")
async def test_per_participant_keys(any_server: Any, rooms: list[Room]) -> None:
    no_shared = RoomOptions(encryption=E2EEOptions(KeyProviderOptions(shared_key=None)))
    bob = await _join(any_server, rooms, "bob", no_shared)
    alice = await _join(any_server, rooms, "alice", no_shared)
    kb, ka = bob.e2ee_manager.key_provider, alice.e2ee_manager.key_provider
    assert kb is not None and ka is not None
    ka.set_key("alice", b"alice-own-key", 0)
    kb.set_key("alice", b"alice-own-key", 0)
    assert kb.export_key("alice", 0) == b"alice-own-key"
    tone = Tone(660)
    try:
        await alice.local_participant.publish_track(
            LocalAudioTrack.create_audio_track("mic", tone.source),
            TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE))
        track = await wait_track(await remote_pub(bob, "alice"))
        assert abs(await peak_frequency(track) - 660) < 15
    finally:
        await tone.close()


W, H = 320, 240


@pytest.mark.compat("e2ee", client="aiolivekit")
@pytest.mark.parametrize("late", [False, True], ids=["early", "late-subscriber"])
@pytest.mark.parametrize("codec", [VideoCodec.VP8, VideoCodec.H264])
async def test_video_shared_key_counters(any_server: Any, rooms: list[Room],
                                         codec: VideoCodec, late: bool) -> None:
    """Counters decode through the server; a subscriber joining 2 s into the stream gets
    a key frame (the server finds it, and answers PLI, on the clear header bytes)."""
    bob = None if late else await _join(any_server, rooms, "bob", _enc())
    alice = await _join(any_server, rooms, "alice", _enc())
    source = VideoSource(W, H)
    count = 0

    async def feed() -> None:
        nonlocal count
        while True:
            source.capture_frame(counter_frame(count % 256))
            count += 1
            await asyncio.sleep(1 / 30)
    feeder = asyncio.ensure_future(feed())
    try:
        pub = await alice.local_participant.publish_track(
            LocalVideoTrack.create_video_track("cam", source),
            TrackPublishOptions(source=TrackSource.SOURCE_CAMERA, video_codec=codec))
        assert pub.encryption_type == EncryptionType.GCM
        if bob is None:
            await asyncio.sleep(2.0)
            bob = await _join(any_server, rooms, "bob", _enc())
        rtrack = await wait_track(await remote_pub(bob, "alice"))
        stream = VideoStream(rtrack, format=VideoBufferType.I420)
        seen: list[int] = []

        async def collect() -> None:
            async for ev in stream:
                seen.append(read_counter(ev.frame))
                if len(seen) >= 45:
                    return
        try:
            await asyncio.wait_for(collect(), 30)
        finally:
            await stream.aclose()
        diffs = [(b - a) % 256 for a, b in itertools.pairwise(seen)]
        assert all(0 <= d < 30 for d in diffs), seen
        assert sum(diffs) >= 30, seen
    finally:
        feeder.cancel()
        await source.aclose()


@pytest.mark.compat("e2ee", client="aiolivekit")
async def test_video_wrong_key_decodes_nothing(any_server: Any, rooms: list[Room]) -> None:
    bob = await _join(any_server, rooms, "bob", _enc(b"wrong-wrong-wrong"))
    rec = Recorder(bob, "e2ee_state_changed")
    alice = await _join(any_server, rooms, "alice", _enc())
    source = VideoSource(W, H)

    async def feed() -> None:
        n = 0
        while True:
            source.capture_frame(counter_frame(n % 256))
            n += 1
            await asyncio.sleep(1 / 30)
    feeder = asyncio.ensure_future(feed())
    try:
        await alice.local_participant.publish_track(
            LocalVideoTrack.create_video_track("cam", source),
            TrackPublishOptions(source=TrackSource.SOURCE_CAMERA))
        rtrack = await wait_track(await remote_pub(bob, "alice"))
        stream = VideoStream(rtrack, format=VideoBufferType.I420)
        got = 0

        async def collect() -> None:
            nonlocal got
            async for _ in stream:
                got += 1
        try:
            await asyncio.wait_for(collect(), 3.0)
        except asyncio.TimeoutError:
            pass
        finally:
            await stream.aclose()
        assert got == 0
        await rec.wait_for(lambda: any(a[1] == EncryptionState.DECRYPTION_FAILED
                                       for _, a in rec.events))
    finally:
        feeder.cancel()
        await source.aclose()


@pytest.mark.compat("e2ee", client="aiolivekit")
async def test_deprecated_e2ee_option(any_server: Any, rooms: list[Room]) -> None:
    """``RoomOptions(e2ee=...)`` still works (with a DeprecationWarning)."""
    bob = await _join(any_server, rooms, "bob", _enc())
    with pytest.warns(DeprecationWarning, match="deprecated"):
        alice = await _join(any_server, rooms, "alice", RoomOptions(
            e2ee=E2EEOptions(KeyProviderOptions(shared_key=KEY))))
    tone = Tone(440)
    try:
        pub = await alice.local_participant.publish_track(
            LocalAudioTrack.create_audio_track("mic", tone.source),
            TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE, red=True))
        assert pub.encryption_type == EncryptionType.GCM
        track = await wait_track(await remote_pub(bob, "alice"))
        assert abs(await peak_frequency(track) - 440) < 15
    finally:
        await tone.close()


@pytest.mark.compat("e2ee_data", client="aiolivekit")
async def test_encrypted_data_stream_and_rpc(any_server: Any, rooms: list[Room]) -> None:
    """With a shared key, user packets, text streams and RPC travel as
    ``DataPacket.encrypted_packet`` and arrive intact; a room without the key gets none
    of the user packets (dropped, reported in the log)."""
    from aiolivekit.data import packets as packets_mod

    bob = await _join(any_server, rooms, "bob", _enc())
    eve = await _join(any_server, rooms, "eve")  # no key
    alice = await _join(any_server, rooms, "alice", _enc())
    for room in (bob, eve):
        for _ in range(200):
            if "alice" in room.remote_participants:
                break
            await asyncio.sleep(0.02)
    got: list[tuple[bytes, str | None]] = []
    eve_got: list[bytes] = []
    bob.on("data_received", lambda pkt: got.append((pkt.data, pkt.topic)))
    eve.on("data_received", lambda pkt: eve_got.append(pkt.data))
    wire: list[str | None] = []
    original = packets_mod.decode_packet

    def spy(data: bytes) -> Any:  # what bob's data channel really carried
        packet = original(data)
        wire.append(packet.WhichOneof("value"))
        return packet
    texts: list[str] = []

    async def on_text(reader: Any, identity: str) -> None:
        texts.append(await reader.read_all())
    bob.register_text_stream_handler("chat", lambda r, i: asyncio.ensure_future(on_text(r, i)))

    async def echo(data: Any) -> str:
        return "echo:" + data.payload
    bob.local_participant.register_rpc_method("echo", echo)
    import aiolivekit.room as room_mod
    room_mod.packets.decode_packet = spy  # type: ignore[attr-defined]
    try:
        await alice.local_participant.publish_data(b"secret-bytes", topic="t1")
        await alice.local_participant.send_text("hello encrypted world", topic="chat")
        reply = await alice.local_participant.perform_rpc(
            destination_identity="bob", method="echo", payload="ping")
        for _ in range(250):
            if got and texts:
                break
            await asyncio.sleep(0.02)
    finally:
        room_mod.packets.decode_packet = original  # type: ignore[attr-defined]
    assert got == [(b"secret-bytes", "t1")]
    assert texts == ["hello encrypted world"]
    assert reply == "echo:ping"
    assert "encrypted_packet" in wire and "user" not in wire and "rpc_request" not in wire
    await asyncio.sleep(0.3)
    assert eve_got == []
