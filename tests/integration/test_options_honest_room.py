"""No silent option (issue 19), through real servers: relay-only ICE, publish options.

Relay-only ICE must never gather or signal a host candidate: without a TURN server the
connect is refused; with one (a small TURN responder here that allocates but relays
nothing) only its relay candidate is gathered, with the configured credentials.
"""

from __future__ import annotations

import asyncio
import logging
import os
import traceback
from collections.abc import Iterator
from typing import Any

import aioice
import jwt
import pytest
from aioice import stun
from aioice.turn import make_integrity_key

from aiolivekit import (
    AudioSource,
    ConnectError,
    IceServer,
    IceTransportType,
    LocalAudioTrack,
    LocalVideoTrack,
    Room,
    RoomOptions,
    RtcConfiguration,
    TrackPublishOptions,
    TrackSource,
    UnsupportedOptionError,
    VideoCodec,
    VideoSource,
)
from aiolivekit.types import AudioTrackFeature

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

TIMEOUT = 15.0


@pytest.fixture
def gathered(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Any, list[Any]]]]:
    """(transport policy, local candidates) of every client-side aioice gathering in
    the test (the embedded server gathers in this process too: its own are skipped)."""
    seen: list[tuple[Any, list[Any]]] = []
    original_init = aioice.Connection.__init__
    original_gather = aioice.Connection.gather_candidates

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        # created synchronously from the code that makes the transport: tell sides apart
        self.test_server_side = any(f"aiolivekit{os.sep}server{os.sep}" in frame.filename
                                    for frame in traceback.extract_stack())
        original_init(self, *args, **kwargs)

    async def gather(self: Any) -> None:
        await original_gather(self)
        if not self.test_server_side:
            seen.append((self._transport_policy, list(self.local_candidates)))

    monkeypatch.setattr(aioice.Connection, "__init__", init)
    monkeypatch.setattr(aioice.Connection, "gather_candidates", gather)
    yield seen


def _relay(*servers: IceServer, ice_timeout: float = 3.0) -> RoomOptions:
    return RoomOptions(ice_timeout=ice_timeout, rtc_config=RtcConfiguration(
        ice_transport_type=IceTransportType.TRANSPORT_RELAY, ice_servers=list(servers)))


async def test_relay_only_without_turn_refuses_after_join(
        any_server: Any, gathered: list[Any]) -> None:
    # neither server offers a TURN server: refused once the join response says so,
    # before any peer connection gathers a candidate
    room = Room()
    with pytest.raises(ConnectError) as info:
        await asyncio.wait_for(room.connect(any_server.url, any_server.token("relay"),
                                            _relay()), TIMEOUT)
    assert info.value.reason == "no_relay", info.value
    assert "TURN" in info.value.message
    assert gathered == []
    assert not room.isconnected()
    # a STUN server is not a relay either (refused before any network I/O)
    with pytest.raises(ConnectError) as info:
        await room.connect(any_server.url, any_server.token("relay"),
                           _relay(IceServer(urls=["stun:127.0.0.1:3478"])))
    assert info.value.reason == "no_relay"


class _TurnResponder(asyncio.DatagramProtocol):
    """Answers TURN requests (long-term credentials, realm "test"); relays nothing."""

    def __init__(self, username: str, password: str) -> None:
        self.key = make_integrity_key(username, "test", password)
        self.usernames: list[str] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = stun.parse_message(data)
        except ValueError:
            return  # channel data / garbage: not relayed
        if msg.message_class != stun.Class.REQUEST:
            return
        if "USERNAME" not in msg.attributes:
            reply = stun.Message(message_method=msg.message_method,
                                 message_class=stun.Class.ERROR,
                                 transaction_id=msg.transaction_id)
            reply.attributes["ERROR-CODE"] = (401, "Unauthorized")
            reply.attributes["REALM"] = "test"
            reply.attributes["NONCE"] = b"nonce"
            self.transport.sendto(bytes(reply), addr)
            return
        if not msg.check_message_integrity(self.key):
            return  # wrong password: no answer
        self.usernames.append(msg.attributes["USERNAME"])
        reply = stun.Message(message_method=msg.message_method,
                             message_class=stun.Class.RESPONSE,
                             transaction_id=msg.transaction_id)
        if msg.message_method == stun.Method.ALLOCATE:
            reply.attributes["XOR-RELAYED-ADDRESS"] = ("127.0.0.1", 40999)
            reply.attributes["XOR-MAPPED-ADDRESS"] = addr
            reply.attributes["LIFETIME"] = 600
        reply.add_message_integrity(self.key)
        self.transport.sendto(bytes(reply), addr)


async def test_relay_only_gathers_relay_candidates_only(
        embedded_server: Any, gathered: list[Any]) -> None:
    loop = asyncio.get_running_loop()
    transport, turn = await loop.create_datagram_endpoint(
        lambda: _TurnResponder("alice", "s3cret"), local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    room = Room()
    try:
        with pytest.raises(ConnectError) as info:
            await asyncio.wait_for(room.connect(
                embedded_server.url, embedded_server.token("relay"),
                _relay(IceServer(urls=[f"turn:127.0.0.1:{port}?transport=udp"],
                                 username="alice", password="s3cret"))), 30)
        # the responder relays nothing, so ICE cannot complete
        assert info.value.reason == "ice_timeout", info.value
    finally:
        transport.close()
    assert gathered, "no ICE gathering happened"
    for policy, candidates in gathered:
        assert policy == aioice.TransportPolicy.RELAY
        assert candidates, "the TURN allocation gave no relay candidate"
        assert {c.type for c in candidates} == {"relay"}, candidates
        assert {(c.host, c.port) for c in candidates} == {("127.0.0.1", 40999)}
    assert turn.usernames and set(turn.usernames) == {"alice"}


async def _join(server: Any, rooms: list[Room], identity: str) -> Room:
    room = Room()
    rooms.append(room)
    await asyncio.wait_for(room.connect(server.url, server.token(identity)), 30)
    return room


async def _remote_pub(room: Room, identity: str, sid: str) -> Any:
    async def loop() -> Any:
        while True:
            p = room.remote_participants.get(identity)
            if p is not None and sid in p.track_publications:
                return p.track_publications[sid]
            await asyncio.sleep(0.02)
    return await asyncio.wait_for(loop(), TIMEOUT)


async def test_publish_options_reach_the_subscriber(
        any_server: Any, rooms: list[Room], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aiolivekit.options_check")
    caplog.set_level(logging.WARNING, logger="aiolivekit.engine.publishing")
    alice = await _join(any_server, rooms, "alice")
    bob = await _join(any_server, rooms, "bob")
    source = AudioSource(48000, 1)
    track = LocalAudioTrack.create_audio_track("mic", source)
    pub = await asyncio.wait_for(alice.local_participant.publish_track(track, TrackPublishOptions(
        source=TrackSource.SOURCE_MICROPHONE, stream="main", preconnect_buffer=True,
        red=True)), TIMEOUT)
    remote = await _remote_pub(bob, "alice", pub.sid)
    assert AudioTrackFeature.TF_PRECONNECT_BUFFER in remote.audio_features
    assert remote._info.stream == "main"
    # red=True is honoured on both servers: RED is negotiated and sent, the subscriber
    # receives (and decodes) RED, and no warning is logged
    assert pub.mime_type == "audio/red"
    assert remote.mime_type == "audio/red"
    assert not any("red=True" in r.getMessage() for r in caplog.records)
    # simulcast=True on a 320x240 video: too small for a second layer, so one layer, as
    # in the official SDK (said at INFO); larger tracks get their layers
    # (tests/interop/test_interop_video_quality.py)
    caplog.set_level(logging.INFO, logger="aiolivekit.participant")
    vsource = VideoSource(320, 240)
    vtrack = LocalVideoTrack.create_video_track("cam", vsource)
    vpub = await asyncio.wait_for(alice.local_participant.publish_track(vtrack, TrackPublishOptions(
        source=TrackSource.SOURCE_CAMERA, simulcast=True)), TIMEOUT)
    assert vpub.simulcasted is False
    assert any("simulcast=True" in r.getMessage() and "too small" in r.getMessage()
               for r in caplog.records)
    vremote = await _remote_pub(bob, "alice", vpub.sid)
    assert vremote.simulcasted is False
    # an unsupported codec is refused before anything reaches the server
    vtrack2 = LocalVideoTrack.create_video_track("cam2", VideoSource(320, 240))
    with pytest.raises(UnsupportedOptionError) as info:
        await alice.local_participant.publish_track(
            vtrack2, TrackPublishOptions(video_codec=VideoCodec.VP9))
    assert info.value.issue == 16
    await asyncio.sleep(0.3)
    names = {p.name for p in bob.remote_participants["alice"].track_publications.values()}
    assert names == {"mic", "cam"}
    await source.aclose()
    await vsource.aclose()


class _Processor:
    """A livekit.rtc-style FrameProcessor that records its hooks and counts frames."""

    def __init__(self) -> None:
        self.enabled = True
        self.frames = 0
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _process(self, frame: Any) -> Any:
        self.frames += 1
        return frame

    def _close(self) -> None:
        self.calls.append(("close", {}))

    def _on_stream_info_updated(self, **kw: Any) -> None:
        self.calls.append(("info", kw))

    def _on_credentials_updated(self, **kw: Any) -> None:
        self.calls.append(("credentials", kw))


async def test_frame_processor_gets_room_context(embedded_server: Any, rooms: list[Room]) -> None:
    from aiolivekit import AudioFrame, AudioStream, RemoteAudioTrack

    alice = await _join(embedded_server, rooms, "alice")
    bob = Room()
    rooms.append(bob)
    token = embedded_server.token("bob")
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    @bob.on("track_subscribed")
    def on_track(track: Any, pub: Any, participant: Any) -> None:
        if isinstance(track, RemoteAudioTrack) and not got.done():
            got.set_result((track, pub))

    await asyncio.wait_for(bob.connect(embedded_server.url, token), 30)
    source = AudioSource(48000, 1)
    track = LocalAudioTrack.create_audio_track("mic", source)
    pub = await asyncio.wait_for(alice.local_participant.publish_track(track), TIMEOUT)
    rtrack, rpub = await asyncio.wait_for(got, TIMEOUT)
    proc = _Processor()
    stream = AudioStream(rtrack, noise_cancellation=proc)
    assert proc.calls[0] == ("info", {"room_name": bob.name, "participant_identity": "alice",
                                      "publication_sid": pub.sid})
    name, creds = proc.calls[1]
    assert name == "credentials" and creds["url"] == embedded_server.url
    # bob's current token (the server may have refreshed the one he joined with)
    claims = jwt.decode(creds["token"], options={"verify_signature": False})
    assert claims["sub"] == "bob" and claims["video"]["room"] == bob.name
    assert rpub.sid == pub.sid and bob.name
    silence = AudioFrame(bytes(960 * 2), 48000, 1, 960)

    async def feed() -> None:
        while True:
            await source.capture_frame(silence)

    feeder = asyncio.ensure_future(feed())
    try:
        async def first_frames() -> None:
            async for _ in stream:
                if proc.frames >= 5:
                    return
        await asyncio.wait_for(first_frames(), TIMEOUT)
    finally:
        feeder.cancel()
    await stream.aclose()
    assert proc.calls[-1] == ("close", {})
    await source.aclose()


@pytest.mark.livekit_server
async def test_red_refused_by_the_server_is_reported(
        rooms: list[Room], caplog: pytest.LogCaptureFixture) -> None:
    """livekit-server configured with Opus only (``room.enabled_codecs``) does not accept
    audio/red: the track goes out as plain Opus, a warning names red=True, mime_type
    says audio/opus, and the tone still arrives."""
    from aiolivekit.testing.servers import LiveKitServerProcess, find_livekit_server

    binary = find_livekit_server()
    if binary is None or os.environ.get("AIOLIVEKIT_NETNS") != "1":
        pytest.skip("needs livekit-server and the private namespace of scripts/netns-run")

    class OpusOnly(LiveKitServerProcess):
        def config_body(self) -> str:
            return super().config_body() + "room:\n  enabled_codecs:\n    - mime: audio/opus\n"

    caplog.set_level(logging.WARNING, logger="aiolivekit.engine.publishing")
    async with OpusOnly(binary) as srv:
        info = srv.info()
        alice, bob = Room(), Room()
        rooms += [alice, bob]
        await asyncio.wait_for(alice.connect(info.url, info.token("alice", room="r")), 30)
        await asyncio.wait_for(bob.connect(info.url, info.token("bob", room="r")), 30)
        track = LocalAudioTrack.create_audio_track("mic", AudioSource(48000, 1))
        pub = await asyncio.wait_for(alice.local_participant.publish_track(
            track, TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE, red=True)),
            TIMEOUT)
        assert pub.mime_type == "audio/opus"
        msgs = [r.getMessage() for r in caplog.records]
        assert any("red=True" in m and "plain Opus" in m for m in msgs), msgs
        remote = await _remote_pub(bob, "alice", pub.sid)
        assert remote.mime_type == "audio/opus"


async def test_track_subscription_permissions(any_server: Any, rooms: list[Room]) -> None:
    """ParticipantTrackPermission: only bob may subscribe to alice's tracks."""
    from aiolivekit import ParticipantTrackPermission

    alice = await _join(any_server, rooms, "alice")
    alice.local_participant.set_track_subscription_permissions(
        allow_all_participants=False,
        participant_permissions=[ParticipantTrackPermission(participant_identity="bob",
                                                            allow_all=True)])
    subscribed: dict[str, list[str]] = {"bob": [], "carol": []}
    joined = []
    for name in ("bob", "carol"):
        room = Room()
        rooms.append(room)
        room.on("track_subscribed",
                lambda track, pub, p, name=name: subscribed[name].append(pub.sid))
        await asyncio.wait_for(room.connect(any_server.url, any_server.token(name)), 30)
        joined.append(room)
    source = AudioSource(48000, 1)
    track = LocalAudioTrack.create_audio_track("mic", source)
    pub = await asyncio.wait_for(alice.local_participant.publish_track(track), TIMEOUT)
    await _remote_pub(joined[1], "alice", pub.sid)  # carol sees the publication...

    async def bob_subscribed() -> None:
        while True:
            if pub.sid in subscribed["bob"]:
                return
            await asyncio.sleep(0.02)
    await asyncio.wait_for(bob_subscribed(), TIMEOUT)
    await asyncio.sleep(1.0)
    assert subscribed["carol"] == []  # ...but may not subscribe
    await source.aclose()
