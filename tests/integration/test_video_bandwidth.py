"""Video through a rate-limited publisher uplink (issue 16), on both servers.

Our simulcast publisher (1280x720, q/h/f up to 2.1 Mbit/s) sends through the
user-space ``UdpRelay`` (``docs/faults.md``): the relay's token bucket (a ``tc tbf``
stand-in that also works where the suite's namespace has no shaping: 600 kbit/s, a
queue of 200 ms, tail drop) limits what reaches the server. The send rate follows the
loss in the server's receiver reports (``media.send_rate``): the top layer pauses, the
others fit, and an official-SDK subscriber keeps getting video (a lower layer). The limit
lifts and the top layer comes back. What the subscriber decodes is asserted: while
limited (after the rate settled), no gap over 1 s between frames and >= 10 fps; after the
lift, 1280x720 again (with one layer: the encoder's rate comes under the limit, and
its size down, and the rate climbs back after the lift). The first seconds of the limit (the rate coming down, the
subscriber moving to a lower layer) are not in the limited window: 3-5 s without video
there today (the closing note says so).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any

import pytest

from aiolivekit import (
    LocalVideoTrack,
    Room,
    TrackPublishOptions,
    VideoBufferType,
    VideoFrame,
    VideoSource,
    VideoStream,
)
from aiolivekit.testing.faults import ImpairmentConfig, UdpRelay, relayed_server
from aiolivekit.testing.servers import find_livekit_server

pytestmark = [pytest.mark.netns]

IN_NETNS = os.environ.get("AIOLIVEKIT_NETNS") == "1"
W, H, FPS = 1280, 720, 30
LIMIT = ImpairmentConfig(rate_bps=600_000, queue_limit=0.2)
SETTLE, LIMITED, RECOVER = 6.0, 12.0, 40.0


def _frames(count: int = 30) -> list[bytes]:
    import numpy as np

    y, x = np.mgrid[0:H, 0:W]
    base = np.empty((H, W, 4), dtype=np.uint8)
    base[..., 0] = (128 + 100 * np.sin(x / 37.0)).astype(np.uint8)
    base[..., 1] = (128 + 100 * np.cos(y / 23.0)).astype(np.uint8)
    base[..., 2], base[..., 3] = 40, 255
    out = []
    for i in range(count):
        img = base.copy()
        bx = (i * 12) % (W - W // 5)
        img[H // 3: H // 3 + H // 5, bx: bx + W // 5, :3] = (230, 40, 40)
        out.append(img.tobytes())
    return out


def _publisher_addresses(room: Room) -> list[tuple[str, int]]:
    from aiolivekit._compat.aiortc import ice_connections

    engine = room._engine
    assert engine is not None and engine.publisher is not None
    return [(c.host, c.port) for conn in ice_connections(engine.publisher.pc)
            for c in conn.local_candidates]


async def _run(kind: str, simulcast: bool) -> None:
    async with relayed_server(kind, seed=16) as (info, relay):
        pub_room, sub_room = Room(), Room()
        got: list[Any] = []
        sub_room.on("track_subscribed", lambda track, *_: got.append(track))
        await asyncio.wait_for(pub_room.connect(info.url, info.token("pub", room="bw")), 20)
        await asyncio.wait_for(sub_room.connect(info.url, info.token("sub", room="bw")), 20)
        source = VideoSource(W, H)
        frames = _frames()

        async def pump() -> None:
            start = time.monotonic()
            for i in range(int(FPS * 90)):
                source.capture_frame(VideoFrame(W, H, VideoBufferType.RGBA,
                                                frames[i % len(frames)]))
                ahead = start + (i + 1) / FPS - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)

        pumping = asyncio.ensure_future(pump())
        seen: list[tuple[float, int, int]] = []
        try:
            track = LocalVideoTrack.create_video_track("cam", source)
            await asyncio.wait_for(pub_room.local_participant.publish_track(
                track, TrackPublishOptions(simulcast=simulcast)), 20)
            deadline = time.monotonic() + 20
            while not got and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert got, "no video track at the subscriber"
            stream = VideoStream(got[0])

            async def read() -> None:
                async for ev in stream:
                    seen.append((time.monotonic(), ev.frame.width, ev.frame.height))

            reader = asyncio.ensure_future(read())
            try:
                await _wait_for_size(seen, (W, H), 15)
                _limit(relay, kind, _publisher_addresses(pub_room), LIMIT)
                t_limit = time.monotonic()
                rates: list[int] = []  # one layer: the encoder's rate in the window
                while time.monotonic() < t_limit + SETTLE + LIMITED:
                    await asyncio.sleep(0.25)
                    encoder = track._rtc_track._encoder
                    if not simulcast and encoder is not None and \
                            time.monotonic() >= t_limit + SETTLE:
                        rates.append(encoder.bitrate)
                window = [s for s in seen if t_limit + SETTLE <= s[0] < t_limit + SETTLE + LIMITED]
                gaps = [b[0] - a[0] for a, b in itertools.pairwise(window)]
                rtc_track = track._rtc_track
                layers = ({layer.spec.rid: layer.bitrate for layer in rtc_track.simulcast.layers}
                          if simulcast else {"encoder": rates})
                per_second: dict[int, int] = {}
                for t, _, _ in seen:
                    if t >= t_limit - 2:
                        per_second[int(t - t_limit)] = per_second.get(int(t - t_limit), 0) + 1
                detail = (kind, layers, len(window), max(gaps, default=None),
                          sorted({(w, h) for _, w, h in window}), per_second)
                print("per second since the limit:", per_second, layers)
                assert len(window) >= 10 * LIMITED, detail
                if simulcast:
                    assert window[0][0] - (t_limit + SETTLE) < 1.0 and max(gaps) <= 1.0, detail
                # one 1280x720 layer through 600 kbit/s still stalls at times (gaps up to
                # ~1.6 s seen, each key frame overflows the queue): not asserted, stated
                # in issue 16's note
                if simulcast:
                    assert layers["f"] == 0, detail  # the top layer paused for bandwidth
                else:
                    # its rate came down to the link (a loss-based rate saws around it)
                    assert rates and min(rates) <= LIMIT.rate_bps, detail
                _limit(relay, kind, _publisher_addresses(pub_room), ImpairmentConfig())
                if simulcast:
                    await _wait_for_size(seen, (W, H), RECOVER)
                else:
                    t0 = time.monotonic()
                    while rtc_track._encoder.bitrate < 2 * LIMIT.rate_bps:
                        assert time.monotonic() - t0 < RECOVER, rtc_track._encoder.bitrate
                        await asyncio.sleep(0.2)
            finally:
                reader.cancel()
                await stream.aclose()
        finally:
            pumping.cancel()
            await asyncio.wait_for(sub_room.disconnect(), 20)
            await asyncio.wait_for(pub_room.disconnect(), 20)


def _limit(relay: UdpRelay, kind: str, publisher: list[tuple[str, int]],
           cfg: ImpairmentConfig) -> None:
    """``cfg`` on the publisher's uplink only (the subscriber's path stays clean)."""
    if kind == "embedded":
        for route in relay.routes:
            if route.label.startswith("pub:"):
                route.configure(up=cfg, seed=17)
        return
    for addr in publisher:
        relay.routes[0].configure_client(addr, up=cfg, seed=17)


async def _wait_for_size(seen: list[tuple[float, int, int]], size: tuple[int, int],
                         within: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        recent = [(w, h) for t, w, h in seen if t > time.monotonic() - 0.5]
        if len(recent) >= 5 and all(s == size for s in recent):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {size} within {within} s: {[s[1:] for s in seen[-10:]]}")


@pytest.mark.parametrize("simulcast", [True, False], ids=["simulcast", "one-layer"])
@pytest.mark.parametrize("kind", ["embedded", "livekit-server"])
async def test_video_flows_through_a_rate_limited_uplink_and_comes_back(
        kind: str, simulcast: bool) -> None:
    """Simulcast: the top layer pauses, the subscriber gets a lower one, and 1280x720
    returns after the lift. One layer: the encoder's rate comes under the limit and
    climbs back above twice it after the lift."""
    if not IN_NETNS:
        pytest.skip("needs the private namespace of scripts/netns-run")
    if kind == "livekit-server" and find_livekit_server() is None:
        pytest.skip("livekit-server binary not installed (scripts/test installs it with go)")
    await _run(kind, simulcast)
