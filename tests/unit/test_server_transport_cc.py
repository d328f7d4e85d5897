"""The server's publisher answer: transport-cc accepted (and its feedback started) when
offered, abs-send-time dropped beside it, x-google-start-bitrate on the media codecs."""

from __future__ import annotations

import asyncio

from aiortc import RTCPeerConnection, RTCSessionDescription

from aiolivekit.server.config import ForwardingOptions
from aiolivekit.server.pc_setup import accept_video_extensions, new_pc
from aiolivekit.server.twcc_feedback import TwccFeedback
from aiolivekit.webrtc.twcc import TWCC_URI

ABS = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


async def _offer(with_twcc: bool) -> str:
    client = RTCPeerConnection()
    client.addTransceiver("video", direction="sendonly")
    await client.setLocalDescription(await client.createOffer())
    sdp = client.localDescription.sdp
    await client.close()
    if not with_twcc:
        return sdp
    out = []
    for line in sdp.splitlines():
        out.append(line)
        if line.startswith("a=extmap:3 "):
            out.append(f"a=extmap:5 {TWCC_URI}")
        if line.startswith("a=rtcp-fb:") and line.endswith(" goog-remb"):
            out.append(line.replace("goog-remb", "transport-cc"))
    return "\r\n".join(out) + "\r\n"


async def _answer(offer: str, options: ForwardingOptions) -> tuple[str, set[asyncio.Task[None]]]:
    pc = new_pc()
    tasks: set[asyncio.Task[None]] = set()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    accept_video_extensions(pc, offer, tasks, options)
    await pc.setLocalDescription(await pc.createAnswer())
    answer = pc.localDescription.sdp
    await pc.close()
    for t in tasks:
        t.cancel()
    return answer, tasks


async def test_transport_cc_answered_with_start_bitrate() -> None:
    answer, tasks = await _answer(await _offer(True), ForwardingOptions())
    assert f"a=extmap:5 {TWCC_URI}" in answer
    assert ABS not in answer  # aiortc's REMB (from abs-send-time) would cap libwebrtc
    vp8 = next(line.split()[0][len("a=rtpmap:"):] for line in answer.splitlines()
               if line.startswith("a=rtpmap:") and "VP8/90000" in line)
    assert f"a=rtcp-fb:{vp8} transport-cc" in answer
    assert any(line.startswith(f"a=fmtp:{vp8} ") and "x-google-start-bitrate=800" in line
               for line in answer.splitlines()), answer
    assert not any("rtx" in line and "x-google-start-bitrate" in line
                   for line in answer.splitlines())
    assert len(tasks) == 1  # the feedback loop, owned by the caller's set


async def test_not_offered_or_turned_off_leaves_the_answer_alone() -> None:
    answer, tasks = await _answer(await _offer(False), ForwardingOptions())
    assert TWCC_URI not in answer and "transport-cc" not in answer and ABS in answer
    assert "x-google-start-bitrate" not in answer and not tasks
    answer, tasks = await _answer(await _offer(True), ForwardingOptions(transport_cc=False))
    assert TWCC_URI not in answer and "x-google-start-bitrate" not in answer and not tasks


async def test_start_bitrate_option() -> None:
    answer, _ = await _answer(await _offer(True),
                              ForwardingOptions(publisher_start_bitrate=0))
    assert "x-google-start-bitrate" not in answer and TWCC_URI in answer
    answer, _ = await _answer(await _offer(True),
                              ForwardingOptions(publisher_start_bitrate=1_500_000))
    assert "x-google-start-bitrate=1500" in answer


def test_feedback_records_arrivals_and_ignores_garbage() -> None:
    fb = TwccFeedback(object(), ext_id=5)
    head = bytes((0x90, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0x12, 0x34))
    ext = bytes((0xBE, 0xDE, 0, 1, (5 << 4) | 1, 0x01, 0x02, 0))
    fb.on_rtp(head + ext + b"x")
    fb.on_rtp(b"\x90")  # truncated: ignored, no exception
    assert fb.recorder.packets_recorded == 1 and fb.recorder.media_ssrc == 0x1234
    assert len(fb.recorder.build()) == 1
