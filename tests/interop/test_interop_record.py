"""``Recorder`` with libwebrtc publishers (the official Python SDK, @livekit/rtc-node,
livekit-client in Chromium): their Opus tone and VP8 video recorded as sent, decoded back
with PyAV (frequency, colour, length)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
import pytest

from aiolivekit import Room
from aiolivekit.record import Recorder, recorder_token
from aiolivekit.testing.servers import ServerInfo

from .official import official_available
from .test_interop_aiolivekit import (
    COLOR,
    OURS,
    TIMEOUT,
    _close_to,
    _dominant,
    _driver,
    _start_synced,
    _wait,
)

pytestmark = [
    pytest.mark.netns,
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
]

SECONDS = 4.0


@pytest.fixture(params=["official_py", "node", "browser"])
def client(request: pytest.FixtureRequest) -> str:
    reason = official_available(request.param)
    if reason:
        pytest.skip(reason)
    return str(request.param)


@pytest.fixture
async def ours(any_server: ServerInfo) -> AsyncIterator[Room]:
    """A visible participant the drivers wait for (the recorder is hidden)."""
    room = Room()
    await asyncio.wait_for(room.connect(any_server.url, any_server.token(OURS)), TIMEOUT)
    try:
        yield room
    finally:
        await asyncio.wait_for(room.disconnect(), TIMEOUT)


def _audio(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as c:
        rate = c.streams.audio[0].rate
        pcm = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
    return pcm * 32767, rate


def _video(path: Path) -> tuple[list[list[float]], list[float]]:
    colours, times = [], []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            rgb = f.to_ndarray(format="rgb24")
            h, w = rgb.shape[:2]
            colours.append(rgb[h // 4:3 * h // 4, w // 4:3 * w // 4].reshape(-1, 3)
                           .mean(axis=0).tolist())
            times.append(float(f.time))
    return colours, times


async def test_record_libwebrtc_publisher(any_server: ServerInfo, client: str, ours: Room,
                                          tmp_path: Path) -> None:
    proc = _driver(client, any_server, [
        {"op": "publish_tone", "freq": 600, "seconds": 20},
        {"op": "publish_video", "width": 320, "height": 240, "color": list(COLOR),
         "seconds": 20, "fps": 15},
        {"op": "wait_signal", "name": "done", "timeout": 60},
    ])
    async with proc:
        await _start_synced(ours, proc)
        await _wait(lambda: len([pub for p in ours.remote_participants.values()
                                 for pub in p.track_publications.values()]) >= 2,
                    what="tone and video published", proc=proc)
        await asyncio.sleep(1.0)  # past the tone's fade-in
        token = recorder_token(any_server.api_key, any_server.api_secret, "test-room")
        async with Recorder(any_server.url, token, tmp_path, duration=SECONDS) as rec:
            assert await asyncio.wait_for(rec.wait(), TIMEOUT + SECONDS) == "duration"
        proc.signal("done")
        await proc.finish()
    by_kind = {f.kind: f for f in rec.files}
    assert sorted(by_kind) == ["audio", "video"], (rec.files, rec.skipped)
    assert all(f.closed and f.error is None for f in rec.files), rec.files
    audio, video = by_kind["audio"], by_kind["video"]
    assert (audio.codec, video.codec) == ("opus", "vp8")
    pcm, rate = _audio(audio.path)
    assert abs(_dominant(pcm[-rate * 2:], rate) - 600) < 8
    assert abs(len(pcm) / rate - (SECONDS - audio.offset)) <= 0.05 * SECONDS
    colours, times = _video(video.path)
    assert len(colours) >= SECONDS * 15 * 0.5, len(colours)
    assert _close_to(colours[-1], COLOR), colours[-1]
    span = times[-1] - times[0] + float(np.median(np.diff(times)))
    assert abs(span - (SECONDS - video.offset)) <= 0.05 * SECONDS, (span, video.offset)
