"""``livekit.rtc.track`` names: tracks, from aiolivekit's implementation."""

from __future__ import annotations

from ..track import (
    AudioTrack,
    LocalAudioTrack,
    LocalTrack,
    LocalVideoTrack,
    RemoteAudioTrack,
    RemoteTrack,
    RemoteVideoTrack,
    Track,
    VideoTrack,
)

__all__ = [
    "AudioTrack",
    "LocalAudioTrack",
    "LocalTrack",
    "LocalVideoTrack",
    "RemoteAudioTrack",
    "RemoteTrack",
    "RemoteVideoTrack",
    "Track",
    "VideoTrack",
]
