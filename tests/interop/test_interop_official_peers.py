"""The harness itself: official clients talk to each other through the official livekit-server.

These prove that each driver (official Python SDK, @livekit/rtc-node, livekit-client in
Chromium) connects, sends and receives data, RPC, text streams, DTMF, audio and video, so that a
failure in ``test_interop_aiolivekit.py`` points at aiolivekit, not at the harness.
"""

from __future__ import annotations

import pytest

from aiolivekit.testing.servers import ServerInfo

from .official import (
    events_of,
    official_available,
    ready_steps,
    run_together,
    start_driver,
    step,
    steps,
)

pytestmark = [pytest.mark.netns, pytest.mark.livekit_server]

# (a, b): a answers RPC and publishes a tone; b sends data/RPC/text/DTMF and detects the tone
PAIRS = [("official_py", "node"), ("node", "browser"), ("browser", "official_py")]
TONE = {"official_py": 440.0, "node": 660.0, "browser": 523.0}


def _skip_unless(*kinds: str) -> None:
    for kind in kinds:
        reason = official_available(kind)
        if reason:
            pytest.skip(reason)


@pytest.mark.compat("connect", "data", "rpc", "text_stream", "dtmf", "audio", "video")
@pytest.mark.parametrize("client", [f"{a}+{b}" for a, b in PAIRS])
async def test_official_pair(livekit_server: ServerInfo, client: str) -> None:
    a_kind, b_kind = client.split("+")
    _skip_unless(a_kind, b_kind)
    url = livekit_server.url
    freq = TONE[a_kind]
    a = start_driver(
        a_kind,
        [
            {
                "op": "connect",
                "url": url,
                "token": livekit_server.token("alice"),
                "stream_topics": ["chat"],
            },
            {"op": "register_rpc", "method": "echo"},
            {
                "op": "register_rpc",
                "method": "fail",
                "behaviour": {"type": "error", "code": 2001, "message": "nope", "data": "extra"},
            },
            *ready_steps("bob"),
            {"op": "publish_tone", "freq": freq, "seconds": 30},
            {
                "op": "publish_video",
                "width": 320,
                "height": 240,
                "color": [40, 180, 60],
                "seconds": 30,
            },
            {"op": "send_data", "payload": "from-alice", "topic": "a2b"},
            {"op": "expect_data", "count": 3, "topic": "b2a", "timeout": 15},
            {"op": "expect_text", "topic": "chat", "timeout": 15},
            {"op": "expect_dtmf", "timeout": 15},
            {"op": "wait_participant_gone", "identity": "bob", "timeout": 50},
        ],
        timeout=75,
    )
    b = start_driver(
        b_kind,
        [
            {"op": "connect", "url": url, "token": livekit_server.token("bob")},
            *ready_steps("alice"),
            {"op": "send_data", "payload": "from-bob", "topic": "b2a", "count": 3},
            {"op": "expect_data", "topic": "a2b", "timeout": 15},
            {"op": "perform_rpc", "dest": "alice", "method": "echo", "payload": "ping-1"},
            {"op": "perform_rpc", "dest": "alice", "method": "fail", "payload": "x"},
            {"op": "perform_rpc", "dest": "alice", "method": "missing", "payload": "x"},
            {"op": "send_text", "topic": "chat", "text": "hello over a text stream"},
            {"op": "publish_dtmf", "code": 7, "digit": "7"},
            {"op": "subscribe_detect_tone", "identity": "alice", "seconds": 1.5, "timeout": 20},
            {"op": "subscribe_video", "identity": "alice", "frames": 10, "timeout": 20},
        ],
        timeout=75,
    )
    ea, eb = await run_together(a, b)

    got = step(ea, "expect_data")["items"]
    assert [(g["payload"], g["topic"], g["sender"]) for g in got] == [
        ("from-bob", "b2a", "bob")
    ] * 3
    assert [(g["payload"], g["sender"]) for g in step(eb, "expect_data")["items"]] == [
        ("from-alice", "alice")
    ]
    echo, fail, missing = steps(eb, "perform_rpc")
    assert echo["result"] == "ping-1"
    assert fail["error"] == {"code": 2001, "message": "nope", "data": "extra"}
    assert missing["error"]["code"] == 1400
    invocations = events_of(ea, "rpc_invocation")
    assert [(i["method"], i["caller"], i["payload"]) for i in invocations] == [
        ("echo", "bob", "ping-1"),
        ("fail", "bob", "x"),
    ]
    text = step(ea, "expect_text")["items"][0]
    assert (text["text"], text["sender"], text["topic"]) == (
        "hello over a text stream",
        "bob",
        "chat",
    )
    dtmf = step(ea, "expect_dtmf")["items"][0]
    assert (dtmf["code"], dtmf["digit"], dtmf["sender"]) == (7, "7", "bob")
    tone = step(eb, "subscribe_detect_tone")
    assert abs(tone["freq"] - freq) < 8, tone
    assert tone["rms"] > 500, tone
    video = step(eb, "subscribe_video")
    assert (video["width"], video["height"]) == (320, 240), video
    # colour survives the round trip (browsers' canvas/video colour conversions shift it a bit)
    r, g, b = video["mean_rgb"]
    assert g > 150 and g > r + 100 and g > b + 100, video["mean_rgb"]
