"""The embedded server forwarding in read batches (server/read_batching.py) with real
WebRTC: three participants publish tones, the server reads its sockets on the timer and
sends each batch's datagrams at its end, and every participant hears both others' tones."""

from __future__ import annotations

import asyncio
import select

import pytest

# same directory (pytest's rootdir import)
from test_room_media import Tone, peak_frequency, remote_pub, wait_track

from aiolivekit import LocalAudioTrack, Room, TrackPublishOptions, TrackSource
from aiolivekit.server import read_batching
from aiolivekit.server.config import ForwardingOptions
from aiolivekit.server.devserver import DevServer

pytestmark = [
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
    pytest.mark.skipif(not hasattr(select, "epoll"), reason="read batching needs epoll"),
]

FREQS = {"p0": 350.0, "p1": 650.0, "p2": 950.0}


async def test_tones_forwarded_through_batched_reads() -> None:
    # three 50 packets/s publishers (and their RTCP) are 3 datagrams per 20-ms window:
    # dense enough for the timer
    loop = asyncio.get_running_loop()
    rooms: list[Room] = []
    tones: list[Tone] = []
    async with DevServer(port=0, forwarding=ForwardingOptions(read_batch_window=0.02)) as server:
        try:
            for identity, freq in FREQS.items():
                room = Room()
                rooms.append(room)
                await asyncio.wait_for(room.connect(server.url, server.token(identity)), 30)
                tone = Tone(freq)
                tones.append(tone)
                track = LocalAudioTrack.create_audio_track(f"tone-{identity}", tone.source)
                await asyncio.wait_for(room.local_participant.publish_track(
                    track, TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE)), 30)
            batchers = read_batching.loop_batchers(loop)
            assert [b._window for b in batchers] == [0.02]
            batcher = batchers[0]
            assert len(batcher) > 0
            polled = [False]

            async def watch() -> None:
                while True:
                    polled[0] = polled[0] or batcher.polling
                    await asyncio.sleep(0.005)

            watcher = asyncio.ensure_future(watch())
            before = (batcher.wakeups, batcher.datagrams)
            try:
                for room, identity in zip(rooms, FREQS, strict=True):
                    for other, freq in FREQS.items():
                        if other == identity:
                            continue
                        pub = await remote_pub(room, other)
                        heard = await peak_frequency(await wait_track(pub))
                        assert abs(heard - freq) < 15, (identity, other, heard)
            finally:
                watcher.cancel()
            wakeups = batcher.wakeups - before[0]
            datagrams = batcher.datagrams - before[1]
            assert polled[0] and batcher.per_window >= 1.5
            assert datagrams > 1.3 * wakeups  # several datagrams per wake-up
        finally:
            for tone in tones:
                await tone.close()
            for room in rooms:
                await room.disconnect()
