"""A track negotiated while the peer connection is still connecting must still flow.

Regression: the embedded server's subscriber PC of a participant joining a room with
published tracks offers the data channels first and the tracks right after the answer,
i.e. during the DTLS handshake. aiortc starts a transceiver only from the connect step
scheduled when a description is applied, and only if DTLS is connected then; the
track's sender was never started (no RTP left the server). ``start_late_transceivers``
re-runs that step once the PC is connected. Two real aiortc PCs on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from typing import Any

import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
)
from av import AudioFrame

from aiolivekit.webrtc.ice import host_addresses
from aiolivekit.webrtc.pc import start_late_transceivers

STEP = 5.0


class Sine(MediaStreamTrack):
    """660 Hz mono s16, 20 ms frames, paced in real time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pts / 48000 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(960) + self._pts) / 48000
        samples = (np.sin(2 * np.pi * 660 * t) * 12000).astype(np.int16)
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, 48000)
        self._pts += 960
        return frame


def _pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[],
                                              bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))


async def _exchange(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> None:
    with host_addresses(["127.0.0.1"]):
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)


# the tests own the tasks start_late_transceivers starts
_LATE_START_TASKS: set[asyncio.Task[Any]] = set()


async def _track_added_during_handshake(fix: bool) -> tuple[RTCPeerConnection,
                                                            RTCPeerConnection,
                                                            RTCRtpSender,
                                                            asyncio.Future[MediaStreamTrack]]:
    """Server-like offerer: data channel first, the track offered right after the answer."""
    server, client = _pc(), _pc()
    if fix:
        for pc in (server, client):
            def on_state(pc: RTCPeerConnection = pc) -> None:
                if pc.connectionState == "connected":
                    start_late_transceivers(pc, _LATE_START_TASKS)
            pc.on("connectionstatechange", on_state)
    got: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

    def on_track(track: MediaStreamTrack) -> None:
        if not got.done():
            got.set_result(track)
    client.on("track", on_track)
    server.createDataChannel("_reliable")
    await _exchange(server, client)
    sender = server.addTransceiver(Sine(), direction="sendonly").sender
    await _exchange(server, client)
    # the case under test: the second negotiation completed before DTLS connected
    assert server.connectionState != "connected"
    return server, client, sender, got


async def _connected(pc: RTCPeerConnection) -> None:
    for _ in range(int(STEP / 0.02)):
        if pc.connectionState == "connected":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not connected: {pc.connectionState}")


async def test_track_negotiated_while_connecting_flows_once_connected() -> None:
    server, client, sender, got = await _track_added_during_handshake(fix=True)
    try:
        await _connected(server)
        track = await asyncio.wait_for(got, STEP)
        samples = []
        for _ in range(25):  # 0.5 s of decoded audio
            frame = await asyncio.wait_for(track.recv(), STEP)
            assert isinstance(frame, AudioFrame)
            samples.append(frame.to_ndarray().reshape(-1, frame.layout.nb_channels)[:, 0])
        x = np.concatenate(samples)[-8192:].astype(np.float64)
        assert np.abs(x).max() > 1000, "received silence"
        spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        assert abs(float(np.fft.rfftfreq(len(x), 1 / 48000)[int(np.argmax(spectrum))]) - 660) < 15
        stats = await sender.getStats()
        sent = [s for s in stats.values() if s.type == "outbound-rtp"]
        assert sent and sent[0].packetsSent > 0
    finally:
        await server.close()
        await client.close()


async def test_without_restart_aiortc_never_starts_such_a_track() -> None:
    """Pins the root cause: plain aiortc leaves that sender unstarted once connected."""
    server, client, sender, _ = await _track_added_during_handshake(fix=False)
    try:
        await _connected(server)
        await asyncio.sleep(0.5)
        assert not sender._RTCRtpSender__started  # type: ignore[attr-defined]
        start_late_transceivers(server, _LATE_START_TASKS)
        for _ in range(int(STEP / 0.02)):
            if sender._RTCRtpSender__started:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.02)
        assert sender._RTCRtpSender__started  # type: ignore[attr-defined]
    finally:
        await server.close()
        await client.close()
