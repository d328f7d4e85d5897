"""Publish permissions from the token come back as clear exceptions, on both servers."""

from __future__ import annotations

from typing import Any

import pytest

from aiolivekit import (
    AudioSource,
    LocalAudioTrack,
    LocalVideoTrack,
    PublishTrackError,
    Room,
    TrackPublishOptions,
    TrackSource,
    VideoSource,
)

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


async def _join(server: Any, rooms: list[Room], identity: str, **grants: Any) -> Room:
    room = Room()
    rooms.append(room)
    await room.connect(server.url, server.token(identity, "perm-room", **grants))
    return room


@pytest.mark.compat('permissions', client="aiolivekit")
async def test_publish_without_can_publish_is_refused(any_server: Any, rooms: list[Room]) -> None:
    room = await _join(any_server, rooms, "viewer", can_publish=False)
    source = AudioSource(48000, 1)
    track = LocalAudioTrack.create_audio_track("mic", source)
    with pytest.raises(PublishTrackError) as info:
        await room.local_participant.publish_track(
            track, TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE))
    assert "not allowed" in info.value.message.lower()
    assert room.local_participant.track_publications == {}
    await source.aclose()


@pytest.mark.compat('permissions', client="aiolivekit")
async def test_source_outside_can_publish_sources_is_refused(any_server: Any,
                                                             rooms: list[Room]) -> None:
    room = await _join(any_server, rooms, "cam-only", can_publish_sources=["camera"])
    audio = AudioSource(48000, 1)
    with pytest.raises(PublishTrackError) as info:
        await room.local_participant.publish_track(
            LocalAudioTrack.create_audio_track("mic", audio),
            TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE))
    assert "not allowed" in info.value.message.lower()
    video = VideoSource(64, 48)
    pub = await room.local_participant.publish_track(
        LocalVideoTrack.create_video_track("cam", video),
        TrackPublishOptions(source=TrackSource.SOURCE_CAMERA))
    assert pub.sid.startswith("TR_") and pub.source == TrackSource.SOURCE_CAMERA
    assert list(room.local_participant.track_publications) == [pub.sid]
    await audio.aclose()
    await video.aclose()
