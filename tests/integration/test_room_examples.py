"""The track-publication spec examples in examples/ run as written against real servers."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aiolivekit import (
    AudioFrame,
    AudioSource,
    LocalAudioTrack,
    LocalVideoTrack,
    Room,
    TrackPublishOptions,
    TrackSource,
    VideoBufferType,
    VideoFrame,
    VideoSource,
)

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class Peer:
    """A participant that publishes a microphone tone and a camera pattern and subscribes."""

    def __init__(self) -> None:
        self.room = Room()
        self.audio = AudioSource(48000, 1)
        self.video = VideoSource(160, 120)
        self.subscribed: list[str] = []
        self.room.on("track_subscribed",
                     lambda track, pub, participant: self.subscribed.append(pub.name))
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self, server: Any) -> None:
        await self.room.connect(server.url, server.token("peer"))

    async def publish_when_joined(self, identity: str) -> None:
        """Publish once ``identity`` is in the room (so it sees track_published)."""
        while identity not in self.room.remote_participants:
            await asyncio.sleep(0.05)
        await self.publish()

    async def publish(self) -> None:
        lp = self.room.local_participant
        await lp.publish_track(LocalAudioTrack.create_audio_track("peer-mic", self.audio),
                               TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE))
        await lp.publish_track(LocalVideoTrack.create_video_track("peer-cam", self.video),
                               TrackPublishOptions(source=TrackSource.SOURCE_CAMERA))
        self._tasks = [asyncio.ensure_future(self._audio()), asyncio.ensure_future(self._video())]

    async def _audio(self) -> None:
        n = 0
        while True:
            t = (np.arange(480) + n * 480) / 48000
            s = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
            await self.audio.capture_frame(AudioFrame(s.tobytes(), 48000, 1, 480))
            n += 1

    async def _video(self) -> None:
        frame = VideoFrame(160, 120, VideoBufferType.RGBA, bytearray(160 * 120 * 4))
        while True:
            self.video.capture_frame(frame)
            await asyncio.sleep(1 / 15)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.room.disconnect()
        await self.audio.aclose()
        await self.video.aclose()


async def _run_example(name: str, server: Any, identity: str, duration: float = 1) -> str:
    env = dict(os.environ, LIVEKIT_URL=server.url, LIVEKIT_TOKEN=server.token(identity),
               EXAMPLE_DURATION=str(duration), PYTHONWARNINGS="ignore")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / name), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = out.decode()
    assert proc.returncode == 0, f"{name} failed:\n{text}\n{err.decode()[-3000:]}"
    return text


async def test_track_publications_example(any_server: Any) -> None:
    peer = Peer()
    await peer.connect(any_server)
    publisher = asyncio.ensure_future(peer.publish_when_joined("example"))
    try:
        out = await _run_example("track_publications.py", any_server, "example", duration=5)
        await asyncio.wait_for(publisher, 5)
    finally:
        publisher.cancel()
        await peer.stop()
    assert re.search(r"Published local track: TR_\w+", out), out
    assert "  Name: mic" in out and "  MIME: audio/opus" in out
    assert "Track is now being received!" in out
    # selective manual subscription of the peer's camera and microphone
    assert "Track published by peer:" in out and "  -> Subscribing" in out
    assert "Subscribed to peer-mic from peer" in out, out
    assert "Subscribed to peer-cam from peer" in out
    assert "Participant: peer" in out
    assert "  Resolution: 160x120" in out and "  Source: 1" in out and "  Source: 2" in out
    assert "mic" in peer.subscribed


async def test_publication_snippets_example(any_server: Any) -> None:
    # The peer publishes before the example joins (existing tracks at join).
    peer = Peer()
    await peer.connect(any_server)
    await peer.publish()
    try:
        out = await _run_example("publication_snippets.py", any_server, "snippets")
    finally:
        await peer.stop()
    assert "MIME type: audio/opus" in out and "MIME type: video/vp8" in out
    assert "Dimensions: 1920x1080" in out
    assert "Track is now being received by at least one participant" in out
    assert "Subscribing to: peer-mic" in out and "Subscribing to: peer-cam" in out
    assert "Encryption: 0" in out
    assert out.rstrip().endswith("done")
