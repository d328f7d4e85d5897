"""EncodedVideoSource: frames encoded by the application (VP8 and H264) are published as
they are and decoded by a subscriber (frame counters read back in order), on both
servers; a key frame is asked for through the feedback; a frame of another codec than
the published one is refused."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from test_room_media import H, W, counter_frame, read_counter, remote_pub, wait_track

from aiolivekit import (
    EncodedFrameType,
    EncodedVideoFrame,
    EncodedVideoSource,
    LocalVideoTrack,
    Room,
    TrackPublishOptions,
    TrackSource,
    VideoBufferType,
    VideoCodec,
    VideoStream,
)
from aiolivekit.media import codecs


async def _join(server: Any, rooms: list[Room], identity: str) -> Room:
    room = Room()
    rooms.append(room)
    await asyncio.wait_for(room.connect(server.url, server.token(identity)), 30)
    return room


@pytest.mark.parametrize("codec", [VideoCodec.VP8, VideoCodec.H264])
async def test_pre_encoded_frames_reach_the_subscriber(any_server: Any, rooms: list[Room],
                                                       codec: VideoCodec) -> None:
    bob = await _join(any_server, rooms, "bob")
    alice = await _join(any_server, rooms, "alice")
    source = EncodedVideoSource(W, H)
    mime = "video/vp8" if codec == VideoCodec.VP8 else "video/h264"
    # the application's own encoder (here PyAV through our helper, used only as a codec)
    encoder = codecs.VideoPacketEncoder(mime, 600_000, 30)
    feedback: list[Any] = []
    count = 0

    async def feed() -> None:
        nonlocal count
        while True:
            wanted = source.take_feedback()
            if wanted.keyframe_requested or wanted.rate_control is not None:
                feedback.append(wanted)
            pts = count * 3000
            packets = encoder.encode(codecs.to_av_video_frame(counter_frame(count % 256)), pts,
                                     wanted.keyframe_requested)
            for p in packets:
                kind = (EncodedFrameType.ENCODED_FRAME_KEY if p.is_keyframe
                        else EncodedFrameType.ENCODED_FRAME_DELTA)
                source.capture_frame(EncodedVideoFrame(bytes(p), W, H, codec, kind,
                                                       timestamp_us=count * 33_333))
            count += 1
            await asyncio.sleep(1 / 30)

    track = LocalVideoTrack.create_video_track("pre-encoded", source)
    pub = await alice.local_participant.publish_track(
        track, TrackPublishOptions(source=TrackSource.SOURCE_CAMERA, video_codec=codec))
    assert pub.mime_type.lower() == mime
    feeder = asyncio.ensure_future(feed())
    try:
        rpub = await remote_pub(bob, "alice")
        assert (rpub.width, rpub.height) == (W, H)
        stream = VideoStream(await wait_track(rpub), format=VideoBufferType.I420)
        seen: list[int] = []

        async def collect() -> None:
            async for ev in stream:
                assert (ev.frame.width, ev.frame.height) == (W, H)
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
        # publishing asked for a key frame and announced the rate to encode at
        assert feedback and feedback[0].keyframe_requested
        assert feedback[0].rate_control is not None
        assert feedback[0].rate_control.framerate_fps == 30.0
        other = VideoCodec.H264 if codec == VideoCodec.VP8 else VideoCodec.VP8
        with pytest.raises(ValueError, match="published as"):
            source.capture_frame(EncodedVideoFrame(b"\x00\x01", W, H, other,
                                                   EncodedFrameType.ENCODED_FRAME_KEY, 0))
    finally:
        feeder.cancel()
        await source.aclose()
