"""No silent option (issue 19): every public option is honoured, refused, or a documented hint.

``POLICY`` classifies each public option field and stream/source constructor parameter
exactly once (a dict key). The enumeration test fails for any option not in it (a new
field must be classified) and for stale entries. Then, per class:

* ``Honoured``: names the test(s) that prove it works; the test must exist. Some also
  carry ``refused``: the values outside what is honoured, which must raise.
* ``Raises``: a non-default value raises the given error.
* ``Hint``: the docstring of the owning object says, next to the option's name, that it
  is a hint.

The remaining tests check the refusals and the honoured behaviours added with this table
(FrameProcessor, stream kwargs, data stream payload limit, refusal before network I/O).
"""

from __future__ import annotations

import asyncio
import dataclasses
import fractions
import inspect
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCIceServer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from livekit.protocol import models as models_pb

from aiolivekit import (
    AudioEncoding,
    AudioSource,
    AudioStream,
    ConnectError,
    DataStreamOptions,
    FrameMetadata,
    IceServer,
    IceTransportType,
    LocalParticipant,
    ParticipantTrackPermission,
    RemoteAudioTrack,
    Room,
    RoomOptions,
    RtcConfiguration,
    StreamError,
    TrackPublishOptions,
    UnsupportedOptionError,
    VideoCodec,
    VideoEncoding,
    VideoSource,
    VideoStream,
    options_check,
)
from aiolivekit.data.manager import DataManager
from aiolivekit.data.streams import StreamAssembler, StreamClosed, StreamData

ROOT = Path(__file__).resolve().parents[2]

RECORDS = (RoomOptions, RtcConfiguration, DataStreamOptions, TrackPublishOptions,
           VideoEncoding, AudioEncoding, IceServer, ParticipantTrackPermission)
CONSTRUCTORS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("AudioStream", AudioStream.__init__),
    ("AudioStream", AudioStream.from_track),
    ("AudioStream", AudioStream.from_participant),
    ("VideoStream", VideoStream.__init__),
    ("VideoStream", VideoStream.from_track),
    ("VideoStream", VideoStream.from_participant),
    ("AudioSource", AudioSource.__init__),
    ("VideoSource", VideoSource.__init__),
    ("VideoSource.capture_frame", VideoSource.capture_frame),
    ("Room", Room.__init__),
    *((f"LocalParticipant.{m}", getattr(LocalParticipant, m)) for m in (
        "publish_data", "stream_text", "send_text", "stream_bytes", "send_bytes", "send_file",
        "perform_rpc", "set_track_subscription_permissions")),
)


@dataclass
class Honoured:
    proofs: tuple[str, ...]  # "tests/...py::test_name"
    refused: Callable[[], Any] | None = None  # a value outside what is honoured
    refused_exc: type[BaseException] = UnsupportedOptionError


@dataclass
class Raises:
    trigger: Callable[[], Any]
    exc: type[BaseException] = UnsupportedOptionError


@dataclass
class Hint:
    owner: Any  # its docstring documents the option as a hint


def H(*proofs: str, refused: Callable[[], Any] | None = None,
      refused_exc: type[BaseException] = UnsupportedOptionError) -> Honoured:
    return Honoured(proofs, refused, refused_exc)


THIS = "tests/unit/test_options_honest.py"
MEDIA = "tests/integration/test_room_media.py"
MEDIA_PC = "tests/integration/test_media_pc.py"
STREAMS = "tests/unit/test_media_streams.py"
OPTIONS_IT = "tests/integration/test_options_honest_room.py"
VIDEO_Q = "tests/interop/test_interop_video_quality.py"


def _room(**kw: Any) -> None:
    options_check.check_room_options(RoomOptions(**kw))


def _rtc(**kw: Any) -> None:
    options_check.check_room_options(RoomOptions(rtc_config=RtcConfiguration(**kw)))


def _video(**kw: Any) -> None:
    options_check.check_publish_options(TrackPublishOptions(**kw), is_video=True)


POLICY: dict[str, Honoured | Raises | Hint] = {
    # RoomOptions
    "RoomOptions.auto_subscribe": H(
        f"{MEDIA}::test_set_subscribed_and_manual_subscription"),
    "RoomOptions.dynacast": H(f"{VIDEO_Q}::test_dynacast_pauses_the_layers_nobody_wants"),
    "RoomOptions.e2ee": H("tests/integration/test_e2ee.py::test_deprecated_e2ee_option",
                          refused=lambda: _room(e2ee=object())),
    "RoomOptions.encryption": H(
        "tests/integration/test_e2ee.py::test_audio_shared_key_tone_and_events",
        "tests/integration/test_e2ee.py::test_video_shared_key_counters",
        refused=lambda: _room(encryption=object())),
    "RoomOptions.rtc_config": H(
        "tests/integration/test_room_basic.py::test_ice_failure_gives_ice_error",
        f"{OPTIONS_IT}::test_relay_only_gathers_relay_candidates_only"),
    "RoomOptions.connect_timeout": H(
        "tests/integration/test_room_basic.py::test_signal_timeout_on_silent_server"),
    "RoomOptions.ice_timeout": H(
        "tests/integration/test_room_basic.py::test_ice_failure_gives_ice_error"),
    "RoomOptions.single_peer_connection": H(
        f"{THIS}::test_single_peer_connection_none_and_false_are_accepted",
        refused=lambda: _room(single_peer_connection=True)),
    "RoomOptions.data_stream": H(
        f"{THIS}::test_data_stream_payload_limit_ends_reader_with_stream_error"),
    # RtcConfiguration
    "RtcConfiguration.ice_transport_type": H(
        f"{OPTIONS_IT}::test_relay_only_without_turn_refuses_after_join",
        f"{OPTIONS_IT}::test_relay_only_gathers_relay_candidates_only",
        refused=lambda: _rtc(ice_transport_type=IceTransportType.TRANSPORT_NOHOST)),
    "RtcConfiguration.continual_gathering_policy": Hint(RtcConfiguration),
    "RtcConfiguration.ice_servers": H(
        f"{OPTIONS_IT}::test_relay_only_gathers_relay_candidates_only"),
    "RtcConfiguration.host_addresses": H(
        "tests/integration/test_room_basic.py::test_ice_failure_gives_ice_error",
        "tests/unit/test_engine_helpers.py::test_host_addresses_is_task_local"),
    # DataStreamOptions
    "DataStreamOptions.max_payload_byte_length": H(
        f"{THIS}::test_data_stream_payload_limit",
        refused=lambda: _room(data_stream=DataStreamOptions(max_payload_byte_length=0)),
        refused_exc=ValueError),
    # TrackPublishOptions
    "TrackPublishOptions.video_encoding": H(f"{MEDIA_PC}::test_video_counter"),
    "TrackPublishOptions.audio_encoding": H(f"{MEDIA_PC}::test_audio_max_bitrate_and_dtx"),
    "TrackPublishOptions.video_codec": H(
        f"{MEDIA}::test_video_counters",
        refused=lambda: _video(video_codec=VideoCodec.AV1)),
    "TrackPublishOptions.dtx": H(f"{MEDIA_PC}::test_audio_max_bitrate_and_dtx"),
    "TrackPublishOptions.red": Hint(TrackPublishOptions),
    "TrackPublishOptions.simulcast": H(
        f"{VIDEO_Q}::test_our_simulcast_layers_reach_each_subscriber",
        f"{THIS}::test_simulcast_is_reported_where_not_sent"),
    "TrackPublishOptions.source": H(
        f"{MEDIA}::test_audio_tone_event_order_and_publication_fields"),
    "TrackPublishOptions.stream": H(f"{OPTIONS_IT}::test_publish_options_reach_the_subscriber"),
    "TrackPublishOptions.preconnect_buffer": H(
        f"{OPTIONS_IT}::test_publish_options_reach_the_subscriber"),
    "TrackPublishOptions.frame_metadata_features": Raises(
        lambda: _video(frame_metadata_features=[0])),
    "TrackPublishOptions.scalability_mode": Raises(lambda: _video(scalability_mode="L3T3")),
    "TrackPublishOptions.video_encoder": Hint(TrackPublishOptions),
    "TrackPublishOptions.degradation_preference": Hint(TrackPublishOptions),
    # VideoEncoding / AudioEncoding / IceServer
    "VideoEncoding.max_bitrate": H(f"{MEDIA_PC}::test_video_counter"),
    "VideoEncoding.max_framerate": H(f"{MEDIA_PC}::test_video_counter"),
    "AudioEncoding.max_bitrate": H(f"{MEDIA_PC}::test_audio_max_bitrate_and_dtx"),
    "IceServer.urls": H(f"{OPTIONS_IT}::test_relay_only_gathers_relay_candidates_only"),
    "IceServer.username": H(f"{OPTIONS_IT}::test_relay_only_gathers_relay_candidates_only"),
    "IceServer.password": H(f"{OPTIONS_IT}::test_relay_only_gathers_relay_candidates_only"),
    # AudioStream
    "AudioStream.track": H(f"{STREAMS}::test_audio_stream_resample_remix_recut"),
    "AudioStream.participant": H(f"{MEDIA_PC}::test_mute_and_from_participant"),
    "AudioStream.track_source": H(f"{MEDIA_PC}::test_mute_and_from_participant"),
    "AudioStream.loop": H(f"{THIS}::test_explicit_loop_is_used"),
    "AudioStream.capacity": H(f"{STREAMS}::test_capacity_drops_oldest_and_aclose"),
    "AudioStream.sample_rate": H(f"{STREAMS}::test_audio_stream_resample_remix_recut"),
    "AudioStream.num_channels": H(f"{STREAMS}::test_audio_stream_resample_remix_recut"),
    "AudioStream.frame_size_ms": H(f"{STREAMS}::test_audio_stream_resample_remix_recut"),
    "AudioStream.noise_cancellation": H(
        f"{THIS}::test_frame_processor_runs_and_closes",
        f"{THIS}::test_frame_processor_hooks_get_the_room_context",
        f"{OPTIONS_IT}::test_frame_processor_gets_room_context",
        refused=lambda: AudioStream(None, noise_cancellation=_NcOptions("bvc", {}))),
    "AudioStream.auto_close_noise_cancellation": H(f"{THIS}::test_frame_processor_runs_and_closes"),
    "AudioStream.**kwargs": H(
        f"{MEDIA_PC}::test_mute_and_from_participant",
        refused=lambda: AudioStream(None, volume=0.5), refused_exc=TypeError),
    # VideoStream
    "VideoStream.track": H(f"{STREAMS}::test_video_stream_formats_and_timestamps"),
    "VideoStream.participant": H(
        f"{STREAMS}::test_from_participant_follows_republish_and_ends_on_leave"),
    "VideoStream.track_source": H(
        f"{STREAMS}::test_from_participant_follows_republish_and_ends_on_leave"),
    "VideoStream.loop": H(f"{THIS}::test_explicit_loop_is_used"),
    "VideoStream.capacity": H(f"{MEDIA_PC}::test_unread_remote_track_stays_bounded"),
    "VideoStream.format": H(f"{STREAMS}::test_video_stream_formats_and_timestamps"),
    "VideoStream.**kwargs": H(
        f"{STREAMS}::test_from_participant_follows_republish_and_ends_on_leave",
        refused=lambda: VideoStream(None, fmt=1), refused_exc=TypeError),
    # AudioSource / VideoSource
    "AudioSource.sample_rate": H(f"{MEDIA_PC}::test_audio_tone_and_bitrate"),
    "AudioSource.num_channels": H(f"{MEDIA_PC}::test_audio_tone_and_bitrate"),
    "AudioSource.queue_size_ms": H(
        "tests/unit/test_media_audio.py::test_audio_source_paces_by_backpressure"),
    "AudioSource.loop": H(f"{THIS}::test_explicit_loop_is_used"),
    "VideoSource.width": H(f"{MEDIA}::test_video_counters"),
    "VideoSource.height": H(f"{MEDIA}::test_video_counters"),
    "VideoSource.is_screencast": Hint(VideoSource),
    "VideoSource.capture_frame.frame": H(
        "tests/unit/test_media_video.py::test_video_source_keeps_latest"),
    "VideoSource.capture_frame.timestamp_us": H(
        "tests/unit/test_media_video.py::test_video_source_keeps_latest"),
    "VideoSource.capture_frame.rotation": H(
        f"{THIS}::test_capture_frame_rotation_is_refused",
        refused=lambda: options_check.check_video_rotation(1)),
    "VideoSource.capture_frame.metadata": H(
        f"{THIS}::test_capture_frame_rotation_is_refused",
        refused=lambda: options_check.check_frame_metadata(FrameMetadata(frame_id=1))),
    **{name: H(f"{OPTIONS_IT}::test_track_subscription_permissions") for name in (
        "ParticipantTrackPermission.participant_identity", "ParticipantTrackPermission.allow_all",
        "ParticipantTrackPermission.allowed_track_sids",
        "LocalParticipant.set_track_subscription_permissions.allow_all_participants",
        "LocalParticipant.set_track_subscription_permissions.participant_permissions")},
    "Room.loop": H(f"{THIS}::test_room_loop_must_be_the_running_loop"),
    # LocalParticipant data senders
    **{f"LocalParticipant.publish_data.{p}": H(
        "tests/integration/test_room_basic.py::test_data_packets_reliable_lossy_topics_destinations")
       for p in ("payload", "reliable", "destination_identities", "topic")},
    **{f"LocalParticipant.{m}.{p}": H(f"{THIS}::test_data_sender_options_reach_the_receiver")
       for m, params in (
           ("stream_text", ("destination_identities", "topic", "attributes", "stream_id",
                            "reply_to_id", "total_size")),
           ("send_text", ("text", "destination_identities", "topic", "attributes",
                          "reply_to_id", "compress")),
           ("stream_bytes", ("name", "total_size", "mime_type", "attributes", "stream_id",
                             "destination_identities", "topic")),
           ("send_bytes", ("data", "topic", "name", "mime_type", "destination_identities",
                           "attributes", "stream_id", "compress")),
           ("send_file", ("file_path", "topic", "destination_identities", "attributes",
                          "stream_id", "compress")),
       ) for p in params},
    "LocalParticipant.stream_text.sender_identity": H(
        f"{THIS}::test_data_sender_options_reach_the_receiver",
        "tests/integration/test_agent_real.py::test_livekit_agents_voice_session_on_aiolivekit"),
    **{f"LocalParticipant.perform_rpc.{p}": H(
        "tests/unit/test_data_rpc.py::test_rpc_success_and_wire_format")
       for p in ("destination_identity", "method", "payload", "response_timeout")},
    "LocalParticipant.perform_rpc.max_round_trip_latency": H(
        "tests/unit/test_data_rpc.py::test_connection_timeout_without_ack"),
}


class _NcOptions:
    """Shaped like livekit.rtc.NoiseCancellationOptions (a native filter module)."""

    def __init__(self, module_id: str, options: dict[str, Any]) -> None:
        self.module_id = module_id
        self.options = options


def public_options() -> set[str]:
    names = set()
    for record in RECORDS:
        for f in dataclasses.fields(record):
            names.add(f"{record.__name__}.{f.name}")
    for owner, fn in CONSTRUCTORS:
        for p in inspect.signature(fn).parameters.values():
            if p.name in ("self", "cls"):
                continue
            key = f"{owner}.**kwargs" if p.kind is p.VAR_KEYWORD else f"{owner}.{p.name}"
            names.add(key)
    return names


def test_every_public_option_is_classified() -> None:
    found = public_options()
    unclassified = sorted(found - set(POLICY))
    stale = sorted(set(POLICY) - found)
    assert not unclassified, f"options neither honoured, raising nor a documented hint: {unclassified}"
    assert not stale, f"POLICY names options that no longer exist: {stale}"


@pytest.mark.parametrize("name", sorted(k for k, v in POLICY.items() if isinstance(v, Honoured)))
def test_honoured_option_has_a_proof(name: str) -> None:
    entry = POLICY[name]
    assert isinstance(entry, Honoured) and entry.proofs
    for proof in entry.proofs:
        path, test = proof.split("::")
        text = (ROOT / path).read_text()
        assert re.search(rf"^(async )?def {re.escape(test)}\(", text, re.M), proof
    if entry.refused is not None:
        with pytest.raises(entry.refused_exc) as info:
            entry.refused()
        if isinstance(info.value, UnsupportedOptionError):
            assert name.split(".")[-1] in info.value.option, info.value.option


@pytest.mark.parametrize("name", sorted(k for k, v in POLICY.items() if isinstance(v, Raises)))
def test_raising_option_raises(name: str) -> None:
    entry = POLICY[name]
    assert isinstance(entry, Raises)
    with pytest.raises(entry.exc) as info:
        entry.trigger()
    assert isinstance(info.value, NotImplementedError)  # UnsupportedOptionError is one
    assert name.split(".")[-1] in str(info.value) and "issue" in str(info.value)


@pytest.mark.parametrize("name", sorted(k for k, v in POLICY.items() if isinstance(v, Hint)))
def test_hint_option_is_documented_as_hint(name: str) -> None:
    entry = POLICY[name]
    assert isinstance(entry, Hint)
    field = name.split(".")[-1]
    doc = inspect.getdoc(entry.owner) or ""
    paragraphs = re.split(r"\n\s*\n|\n\s*\* ", doc)
    assert any(f"``{field}" in p and "hint" in p for p in paragraphs), (name, doc)


def test_docs_options_table_lists_every_option() -> None:
    text = (ROOT / "docs/options.md").read_text()
    missing = [n for n in sorted(POLICY) if f"`{n}`" not in text]
    assert not missing, missing


# --------------------------------------------------------------------------- refusals


def test_unsupported_option_error_names_option_value_and_issue() -> None:
    with pytest.raises(UnsupportedOptionError) as info:
        _room(encryption="GCM")
    err = info.value
    assert err.option == "RoomOptions.encryption" and err.value == "GCM" and err.issue == 17
    assert "RoomOptions.encryption='GCM'" in err.message and "issue 17" in err.message
    assert isinstance(err, NotImplementedError)


def test_video_codecs_other_than_vp8_h264_raise_issue_16() -> None:
    for codec in (VideoCodec.AV1, VideoCodec.VP9, VideoCodec.H265):
        with pytest.raises(UnsupportedOptionError) as info:
            _video(video_codec=codec)
        assert info.value.issue == 16 and info.value.value == codec
    for codec in (VideoCodec.VP8, VideoCodec.H264):
        _video(video_codec=codec)
    # audio: video_codec means nothing (as in livekit.rtc)
    options_check.check_publish_options(
        TrackPublishOptions(video_codec=VideoCodec.AV1), is_video=False)
    with pytest.raises(ValueError):
        _video(video_codec=42)


def test_simulcast_is_reported_where_not_sent(caplog: pytest.LogCaptureFixture) -> None:
    """simulcast=True is honoured (the layers are declared), except where it cannot be:
    an EncodedVideoSource track is reported; a track too small for two layers gets one,
    as in the official SDK; red on video and simulcast on audio mean nothing."""
    from aiolivekit import EncodedVideoSource, LocalVideoTrack, VideoSource
    from aiolivekit.participant import add_track_request

    caplog.set_level(logging.INFO)
    _video(simulcast=True, red=True)
    options_check.check_publish_options(TrackPublishOptions(red=True, simulcast=True),
                                        is_video=False)
    assert not caplog.records
    options = TrackPublishOptions(simulcast=True)
    req = add_track_request(LocalVideoTrack.create_video_track(
        "v", VideoSource(1280, 720)), options)
    assert [(layer.rid, layer.width, layer.height) for layer in req.layers] == [
        ("q", 320, 180), ("h", 640, 360), ("f", 1280, 720)]
    assert list(req.simulcast_codecs[0].layers) == list(req.layers)
    assert not caplog.records
    req = add_track_request(LocalVideoTrack.create_video_track(
        "v", VideoSource(320, 240)), options)
    assert not req.layers
    assert "too small" in caplog.records[-1].getMessage()
    caplog.clear()
    req = add_track_request(LocalVideoTrack.create_video_track(
        "v", EncodedVideoSource(1280, 720)), options)
    assert not req.layers
    msg = caplog.records[-1]
    assert msg.levelno == logging.WARNING and "EncodedVideoSource" in msg.getMessage()
    caplog.clear()
    _video()
    options_check.check_publish_options(TrackPublishOptions(), is_video=False)
    assert not caplog.records  # defaults: nothing to report


def test_relay_only_checks() -> None:
    # explicit ice_servers without TURN: refused before any network I/O
    stun_only = RtcConfiguration(ice_transport_type=IceTransportType.TRANSPORT_RELAY,
                                 ice_servers=[IceServer(urls=["stun:127.0.0.1:3478"])])
    with pytest.raises(ConnectError) as info:
        options_check.check_room_options(RoomOptions(rtc_config=stun_only))
    assert info.value.reason == "no_relay"
    relay = RoomOptions(rtc_config=RtcConfiguration(
        ice_transport_type=IceTransportType.TRANSPORT_RELAY))
    options_check.check_room_options(relay)  # servers come with the join response
    assert options_check.relay_only(relay) and not options_check.relay_only(RoomOptions())
    with pytest.raises(ConnectError) as info:
        options_check.require_relay_servers(relay, [RTCIceServer(urls="stun:127.0.0.1:3478")])
    assert info.value.reason == "no_relay"
    options_check.require_relay_servers(relay, [RTCIceServer(urls=["turn:127.0.0.1:3478"])])
    options_check.require_relay_servers(RoomOptions(), [])  # not relay-only: nothing needed
    with pytest.raises(ValueError):
        _rtc(ice_transport_type=9)
    with pytest.raises(ValueError):
        _rtc(continual_gathering_policy=5)


def test_single_peer_connection_none_and_false_are_accepted() -> None:
    _room(single_peer_connection=None)
    _room(single_peer_connection=False)
    with pytest.raises(UnsupportedOptionError):
        _room(single_peer_connection=True)


@pytest.mark.parametrize("options", [
    RoomOptions(e2ee=object()),
    RoomOptions(encryption=object()),
    RoomOptions(single_peer_connection=True),
    RoomOptions(rtc_config=RtcConfiguration(ice_transport_type=IceTransportType.TRANSPORT_NOHOST)),
])
async def test_room_connect_refuses_before_network_io(options: RoomOptions) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        room = Room()
        with pytest.raises(UnsupportedOptionError):
            await asyncio.wait_for(room.connect(f"ws://127.0.0.1:{port}", "token", options), 5)
        await asyncio.sleep(0.05)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
        assert not room.isconnected()
    finally:
        listener.close()


# --------------------------------------------------------------------------- honoured


class _Track(MediaStreamTrack):
    kind = "audio"

    def __init__(self, frames: list[Any]) -> None:
        super().__init__()
        self._frames = frames
        self.go = asyncio.Event()  # set: deliver everything
        self.step = asyncio.Semaphore(0)  # or: one frame per release()

    async def recv(self) -> Any:
        if not self.go.is_set():
            await self.step.acquire()
        if not self._frames:
            raise MediaStreamError
        return self._frames.pop(0)


def _frames(values: list[int]) -> list[Any]:
    out = []
    for i, v in enumerate(values):
        f = av.AudioFrame.from_ndarray(np.full((1, 960), v, dtype=np.int16),
                                       format="s16", layout="mono")
        f.sample_rate = 48000
        f.pts = i * 960
        f.time_base = fractions.Fraction(1, 48000)
        out.append(f)
    return out


class Negate:
    """A FrameProcessor (the livekit.rtc protocol: enabled, _process, _close)."""

    def __init__(self) -> None:
        self.enabled = True
        self.closed = 0

    def _process(self, frame: Any) -> Any:
        from aiolivekit import AudioFrame

        x = -np.frombuffer(frame.data, dtype=np.int16)
        return AudioFrame(x.tobytes(), frame.sample_rate, frame.num_channels,
                          frame.samples_per_channel)

    def _close(self) -> None:
        self.closed += 1


async def test_frame_processor_runs_and_closes() -> None:
    rtc = _Track(_frames([100, 200, 300]))
    track = RemoteAudioTrack._from_rtc(rtc, sid="TR_p", name="p")
    proc = Negate()
    stream = AudioStream(track, noise_cancellation=proc)
    rtc.step.release()
    first = await asyncio.wait_for(stream.__anext__(), 5)
    assert np.frombuffer(first.frame.data, dtype=np.int16)[0] == -100
    proc.enabled = False  # honoured per frame, as livekit.rtc
    rtc.go.set()
    rtc.step.release()
    values = [int(np.frombuffer(ev.frame.data, dtype=np.int16)[0])
              async for ev in stream]
    assert values == [200, 300]
    await stream.aclose()
    assert proc.closed == 1  # auto_close_noise_cancellation defaults to True
    # from_track defaults to leaving the processor open (reusable), as livekit.rtc
    rtc2 = _Track(_frames([5]))
    track2 = RemoteAudioTrack._from_rtc(rtc2, sid="TR_q", name="q")
    proc2 = Negate()
    s2 = AudioStream.from_track(track=track2, noise_cancellation=proc2)
    rtc2.go.set()
    assert [int(np.frombuffer(ev.frame.data, dtype=np.int16)[0]) async for ev in s2] == [-5]
    await s2.aclose()
    assert proc2.closed == 0
    s3 = AudioStream.from_track(track=track2, noise_cancellation=proc2,
                                auto_close_noise_cancellation=True)
    await s3.aclose()
    assert proc2.closed == 1


def test_noise_cancellation_and_kwargs_refusals() -> None:
    with pytest.raises(UnsupportedOptionError) as info:
        AudioStream(None, noise_cancellation=_NcOptions("krisp", {"x": 1}))
    assert info.value.option == "AudioStream.noise_cancellation"
    with pytest.raises(TypeError, match="noise_cancellation"):
        AudioStream(None, noise_cancellation="bvc")
    with pytest.raises(TypeError, match="volume"):
        AudioStream(None, volume=1.0)
    with pytest.raises(TypeError, match="fmt"):
        VideoStream(None, fmt=1)


async def test_explicit_loop_is_used() -> None:
    loop = asyncio.get_running_loop()
    rtc = _Track(_frames([7]))
    track = RemoteAudioTrack._from_rtc(rtc, sid="TR_l", name="l")
    stream = AudioStream(track, loop=loop)
    assert stream._loop is loop
    rtc.go.set()
    assert [int(np.frombuffer(ev.frame.data, dtype=np.int16)[0]) async for ev in stream] == [7]
    vstream = VideoStream.from_participant(participant=object(), track_source=1, loop=loop)
    assert vstream._loop is loop
    await vstream.aclose()
    src = AudioSource(48000, 1, loop=loop)
    assert src._loop is loop
    await src.aclose()


def _header(sid: str, inline: bytes | None = None) -> models_pb.DataStream.Header:
    h = models_pb.DataStream.Header(stream_id=sid, topic="t", mime_type="text/plain")
    h.text_header.SetInParent()
    if inline is not None:
        h.inline_content = inline
    return h


def _chunk(sid: str, i: int, content: bytes) -> models_pb.DataStream.Chunk:
    return models_pb.DataStream.Chunk(stream_id=sid, chunk_index=i, content=content)


def test_data_stream_payload_limit() -> None:
    asm = StreamAssembler(max_payload=10)
    asm.handle_header(_header("s1"), "bob")
    assert asm.handle_chunk(_chunk("s1", 0, b"123456")) == [StreamData("s1", b"123456")]
    evs = asm.handle_chunk(_chunk("s1", 1, b"78901"))  # 11 bytes in all
    assert len(evs) == 1 and isinstance(evs[0], StreamClosed)
    assert evs[0].error is not None and "max_payload_byte_length (10 bytes)" in evs[0].error
    assert asm.handle_chunk(_chunk("s1", 2, b"x")) == []  # the stream is gone
    # exactly at the limit is fine; inline (single-packet) streams are bounded too
    asm.handle_header(_header("s2"), "bob")
    assert asm.handle_chunk(_chunk("s2", 0, b"1234567890")) == [StreamData("s2", b"1234567890")]
    evs = asm.handle_header(_header("s3", inline=b"x" * 11), "bob")
    assert isinstance(evs[-1], StreamClosed) and "max_payload_byte_length" in (evs[-1].error or "")
    # compressed: bounded after inflation
    import zlib

    comp = zlib.compressobj(wbits=-15)
    blob = comp.compress(b"a" * 1000) + comp.flush()
    h = _header("s4")
    h.compression = models_pb.DataStream.DEFLATE_RAW
    asm.handle_header(h, "bob")
    evs = asm.handle_chunk(_chunk("s4", 0, blob))
    assert isinstance(evs[-1], StreamClosed) and "max_payload_byte_length" in (evs[-1].error or "")
    assert options_check.stream_payload_limit(RoomOptions()) is None


async def test_data_stream_payload_limit_ends_reader_with_stream_error() -> None:
    # what Room.connect does with RoomOptions.data_stream
    dm = DataManager(emit=lambda *a: None, lookup_participant=lambda i: None)
    dm.set_stream_payload_limit(options_check.stream_payload_limit(
        RoomOptions(data_stream=DataStreamOptions(max_payload_byte_length=8))))
    results: list[Any] = []

    async def read(reader: Any) -> None:
        try:
            results.append(await reader.read_all())
        except StreamError as exc:
            results.append(exc)

    dm.register_text_stream_handler("t", lambda r, who: asyncio.ensure_future(read(r)))

    def packet(**kw: Any) -> models_pb.DataPacket:
        pkt = models_pb.DataPacket(participant_identity="bob")
        for name, msg in kw.items():
            getattr(pkt, name).CopyFrom(msg)
        return pkt

    for sid, parts in (("ok", [b"1234", b"5678"]), ("big", [b"1234", b"56789"])):
        dm.handle_packet(packet(stream_header=_header(sid)))
        for i, part in enumerate(parts):
            dm.handle_packet(packet(stream_chunk=_chunk(sid, i, part)))
        dm.handle_packet(packet(stream_trailer=models_pb.DataStream.Trailer(stream_id=sid)))
    for _ in range(100):
        if len(results) == 2:
            break
        await asyncio.sleep(0.01)
    assert results[0] == "12345678"
    assert isinstance(results[1], StreamError) and "max_payload_byte_length" in str(results[1])
    dm.close()


class Recording(Negate):
    """A FrameProcessor with the optional livekit.rtc 1.2 context hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _on_stream_info_updated(self, **kw: Any) -> None:
        self.calls.append(("info", kw))

    def _on_credentials_updated(self, **kw: Any) -> None:
        self.calls.append(("credentials", kw))

    def _on_stream_info_cleared(self) -> None:
        self.calls.append(("info_cleared", {}))

    def _on_credentials_cleared(self) -> None:
        self.calls.append(("credentials_cleared", {}))


async def test_frame_processor_hooks_get_the_room_context() -> None:
    from types import SimpleNamespace

    from aiolivekit import EventEmitter

    rtc = _Track(_frames([1]))
    track = RemoteAudioTrack._from_rtc(rtc, sid="TR_ctx", name="mic")
    room: Any = EventEmitter()
    room.name = "lobby"
    room._token = "tok1"
    room._engine = SimpleNamespace(url="ws://127.0.0.1:7880")
    pub = SimpleNamespace(sid="TR_ctx")
    room.remote_participants = {"alice": SimpleNamespace(
        identity="alice", track_publications={"TR_ctx": pub})}
    track._set_room(room)
    proc = Recording()
    stream = AudioStream(track, noise_cancellation=proc)
    assert proc.calls == [
        ("info", {"room_name": "lobby", "participant_identity": "alice",
                  "publication_sid": "TR_ctx"}),
        ("credentials", {"token": "tok1", "url": "ws://127.0.0.1:7880"}),
    ]
    room._token = "tok2"
    room.emit("token_refreshed")
    assert proc.calls[-1] == ("credentials", {"token": "tok2", "url": "ws://127.0.0.1:7880"})
    await stream.aclose()
    assert [c[0] for c in proc.calls[-2:]] == ["info_cleared", "credentials_cleared"]
    n = len(proc.calls)
    room.emit("token_refreshed")  # no longer bound
    assert len(proc.calls) == n and proc.closed == 1
    # a processor without the optional hooks (the livekit.rtc base has no-op ones) is fine
    rtc2 = _Track(_frames([2]))
    track2 = RemoteAudioTrack._from_rtc(rtc2, sid="TR_ctx", name="mic")
    track2._set_room(room)
    s2 = AudioStream(track2, noise_cancellation=Negate())
    rtc2.go.set()
    assert [int(np.frombuffer(ev.frame.data, dtype=np.int16)[0]) async for ev in s2] == [-2]


async def test_data_sender_options_reach_the_receiver(tmp_path: Path) -> None:
    """Every keyword of stream_text / send_text / stream_bytes / send_bytes / send_file
    shows on the receiving side or on the wire."""
    from test_data_support import Hub

    cap = models_pb.ClientInfo.CAP_COMPRESSION_DEFLATE_RAW
    hub = Hub()
    alice = hub.join("alice")
    bob = hub.join("bob", capabilities=(cap,))
    carol = hub.join("carol", capabilities=(cap,))
    got: dict[str, tuple[str, Any, Any]] = {}
    carol_got: list[str] = []

    async def consume(reader: Any, who: str) -> None:
        if hasattr(reader, "read_all"):
            data: Any = await reader.read_all()
        else:
            data = b"".join([c async for c in reader])
        got[reader.info.stream_id] = (who, data, reader.info)

    for topic in ("t", "b"):
        bob.manager.register_text_stream_handler(topic, lambda r, w: asyncio.ensure_future(consume(r, w)))
        bob.manager.register_byte_stream_handler(topic, lambda r, w: asyncio.ensure_future(consume(r, w)))
        carol.manager.register_text_stream_handler(topic, lambda r, w: carol_got.append(w))
        carol.manager.register_byte_stream_handler(topic, lambda r, w: carol_got.append(w))

    def header(sid: str) -> Any:
        return next(p.stream_header for p in hub.sent_by("alice")
                    if p.HasField("stream_header") and p.stream_header.stream_id == sid)

    to_bob = {"destination_identities": ["bob"]}
    w = await alice.manager.stream_text(topic="t", attributes={"k": "1"}, stream_id="S1",
                                        reply_to_id="R0", total_size=5, sender_identity="alice",
                                        **to_bob)
    await w.write("hello")
    await w.aclose()
    big = "compressible " * 5000
    await alice.manager.send_text(big, topic="t", attributes={"k": "2"}, reply_to_id="R1",
                                  compress=False, **to_bob)
    bw = await alice.manager.stream_bytes("n.bin", total_size=3, mime_type="application/x-n",
                                          attributes={"k": "3"}, stream_id="B1", topic="b",
                                          **to_bob)
    await bw.write(b"xyz")
    await bw.aclose()
    await alice.manager.send_bytes(big.encode(), topic="b", name="d.bin",
                                   mime_type="application/x-d", attributes={"k": "4"},
                                   stream_id="B2", compress=True, **to_bob)
    path = tmp_path / "f.txt"
    path.write_bytes(big.encode())
    await alice.manager.send_file(str(path), topic="b", attributes={"k": "5"}, stream_id="F1",
                                  compress=False, **to_bob)
    for _ in range(500):
        if len(got) == 5:
            break
        await asyncio.sleep(0.01)
    assert len(got) == 5, got.keys()
    assert carol_got == []  # destination_identities honoured
    who, text, info = got["S1"]
    assert (who, text, info.topic, info.attributes) == ("alice", "hello", "t", {"k": "1"})
    # total_size of a text stream is the writer's info.size (livekit.rtc 1.2 does not
    # send it either: text may be written before its length is known)
    assert w.info.size == 5 and w.info.stream_id == "S1"
    assert header("S1").text_header.reply_to_stream_id == "R0"
    sid2 = next(s for s in got if s not in ("S1", "B1", "B2", "F1"))
    assert got[sid2][1] == big and got[sid2][2].attributes == {"k": "2"}
    assert header(sid2).text_header.reply_to_stream_id == "R1"
    assert header(sid2).compression == models_pb.DataStream.NONE  # compress=False
    _, data, info = got["B1"]
    assert (data, info.name, info.mime_type, info.size, info.attributes) == (
        b"xyz", "n.bin", "application/x-n", 3, {"k": "3"})
    _, data, info = got["B2"]
    assert (data, info.name, info.mime_type, info.attributes) == (
        big.encode(), "d.bin", "application/x-d", {"k": "4"})
    assert header("B2").compression == models_pb.DataStream.DEFLATE_RAW  # compress=True
    _, data, info = got["F1"]
    assert (data, info.name, info.attributes) == (big.encode(), "f.txt", {"k": "5"})
    assert header("F1").compression == models_pb.DataStream.NONE
    # sender_identity naming someone else (an agent writing a user's transcript): every
    # packet of the stream carries that identity, and the receiver sees it as the sender
    w = await alice.manager.stream_text(topic="t", stream_id="S2", sender_identity="carol",
                                        **to_bob)
    await w.write("on behalf")
    await w.aclose()
    for _ in range(500):
        if "S2" in got:
            break
        await asyncio.sleep(0.01)
    assert got["S2"][:2] == ("carol", "on behalf")
    s2 = [p for p in hub.sent_by("alice")
          if (p.HasField("stream_header") and p.stream_header.stream_id == "S2")
          or (p.HasField("stream_chunk") and p.stream_chunk.stream_id == "S2")
          or (p.HasField("stream_trailer") and p.stream_trailer.stream_id == "S2")]
    assert len(s2) == 3 and {p.participant_identity for p in s2} == {"carol"}
    # the packets alice sends next are hers again
    await alice.manager.send_text("mine", topic="t", stream_id="S3", **to_bob)
    assert {p.participant_identity for p in hub.sent_by("alice")
            if p.HasField("stream_header") and p.stream_header.stream_id == "S3"} == {"alice"}


def test_capture_frame_rotation_is_refused() -> None:
    from aiolivekit import VideoBufferType, VideoFrame, VideoRotation

    src = VideoSource(2, 2)
    frame = VideoFrame(2, 2, VideoBufferType.RGBA, bytes(16))
    src.capture_frame(frame, timestamp_us=5, rotation=VideoRotation.VIDEO_ROTATION_0)
    for rot in (VideoRotation.VIDEO_ROTATION_90, VideoRotation.VIDEO_ROTATION_180,
                VideoRotation.VIDEO_ROTATION_270):
        with pytest.raises(UnsupportedOptionError) as info:
            src.capture_frame(frame, rotation=rot)
        assert info.value.issue == 16
    with pytest.raises(ValueError):
        src.capture_frame(frame, rotation=7)
    src.capture_frame(frame, metadata=None)
    with pytest.raises(UnsupportedOptionError) as info:
        src.capture_frame(frame, metadata=FrameMetadata(user_timestamp=1))
    assert info.value.option == "VideoSource.capture_frame(metadata)"


async def test_room_loop_must_be_the_running_loop() -> None:
    other = asyncio.new_event_loop()
    try:
        room = Room(loop=other)
        with pytest.raises(ValueError, match="another event loop"):
            await room.connect("ws://127.0.0.1:9", "token")
    finally:
        other.close()
    # the running loop is accepted: the connect goes on (and is refused for e2ee here)
    room = Room(loop=asyncio.get_running_loop())
    with pytest.raises(UnsupportedOptionError):
        await room.connect("ws://127.0.0.1:9", "token", RoomOptions(e2ee=object()))
