"""Publishing without a server: the AddTrackRequest the LocalParticipant builds from a local
track and its options, and the engine's handling of the server's answer to it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from livekit.protocol import models as models_pb, rtc as rtc_pb

from aiolivekit import (
    AudioSource,
    LocalAudioTrack,
    LocalVideoTrack,
    TrackPublishOptions,
    TrackSource,
    VideoCodec,
    VideoSource,
)
from aiolivekit.engine import signal as sig
from aiolivekit.engine.publishing import TrackPublisher
from aiolivekit.errors import PublishTrackError
from aiolivekit.participant import add_track_request
from aiolivekit.types import AudioTrackFeature


async def test_audio_request_from_a_stereo_track() -> None:
    track = LocalAudioTrack.create_audio_track("mic", AudioSource(48000, 2))
    track.mute()
    req = add_track_request(track, TrackPublishOptions(
        source=TrackSource.SOURCE_MICROPHONE, dtx=False, stream="s1", preconnect_buffer=True))
    assert req.cid == track._rtc_track.id and req.name == "mic" and req.stream == "s1"
    assert req.type == models_pb.TrackType.AUDIO and req.muted
    assert req.source == models_pb.TrackSource.MICROPHONE
    assert req.stereo and req.disable_dtx and req.disable_red
    red = add_track_request(track, TrackPublishOptions(red=True))
    assert not red.disable_red  # RED asked for: the server may forward it
    assert list(req.audio_features) == [AudioTrackFeature.TF_STEREO, AudioTrackFeature.TF_NO_DTX,
                                        AudioTrackFeature.TF_PRECONNECT_BUFFER]
    assert (req.width, req.height) == (0, 0) and not req.simulcast_codecs


async def test_video_request_carries_size_and_codec() -> None:
    track = LocalVideoTrack.create_video_track("cam", VideoSource(320, 240))
    req = add_track_request(track, TrackPublishOptions(
        source=TrackSource.SOURCE_CAMERA, video_codec=VideoCodec.H264, dtx=True))
    assert req.type == models_pb.TrackType.VIDEO and not req.muted
    assert req.source == models_pb.TrackSource.CAMERA
    assert (req.width, req.height) == (320, 240)
    assert [(c.codec, c.cid) for c in req.simulcast_codecs] == [("h264", track._rtc_track.id)]
    assert not req.stereo and not list(req.audio_features)


class _Session:
    def __init__(self) -> None:
        self.sent: list[rtc_pb.AddTrackRequest] = []

    def add_track(self, req: rtc_pb.AddTrackRequest) -> None:
        self.sent.append(req)


class _Engine:
    """The PublisherLink side TrackPublisher.request uses."""

    def __init__(self) -> None:
        self.session: Any = _Session()
        self.publisher = None
        self.flushes = 0

    def send_signal(self) -> None:
        self.flushes += 1


async def test_request_resolved_by_the_ack_and_refused_with_the_reason() -> None:
    engine = _Engine()
    publisher = TrackPublisher(engine)  # type: ignore[arg-type]
    req = rtc_pb.AddTrackRequest(cid="c1", name="mic")
    task = asyncio.ensure_future(publisher.request(req, timeout=2))
    await asyncio.sleep(0)
    assert [r.cid for r in engine.session.sent] == ["c1"] and engine.flushes == 1
    publisher.on_signal(sig.TrackPublishedAck("other", models_pb.TrackInfo(sid="TR_x")))
    publisher.on_signal(sig.TrackPublishedAck("c1", models_pb.TrackInfo(sid="TR_1")))
    assert (await task).sid == "TR_1"

    task = asyncio.ensure_future(publisher.request(rtc_pb.AddTrackRequest(cid="c2"), timeout=2))
    await asyncio.sleep(0)
    publisher.on_signal(sig.RequestAnswered(7, rtc_pb.RequestResponse.NOT_ALLOWED, "nope",
                                            "add_track", "c2"))
    with pytest.raises(PublishTrackError, match=r"refused the track \(NOT_ALLOWED\): nope.*canPublish"):
        await task

    task = asyncio.ensure_future(publisher.request(rtc_pb.AddTrackRequest(cid="c3"), timeout=2))
    await asyncio.sleep(0)
    publisher.close()  # the session ended
    with pytest.raises(PublishTrackError, match="disconnected while publishing"):
        await task
    with pytest.raises(PublishTrackError, match="did not acknowledge"):
        await publisher.request(rtc_pb.AddTrackRequest(cid="c4"), timeout=0.05)
