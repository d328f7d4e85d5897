import asyncio
import json

import aioice.ice

from aiolivekit.webrtc import ice, sdp

OFFER = """v=0
o=- 1 1 IN IP4 0.0.0.0
s=-
t=0 0
a=msid-semantic: WMS
m=audio 9 UDP/TLS/RTP/SAVPF 111
a=mid:0
a=sendonly
a=msid:- 5b1c-cid-audio
a=rtpmap:111 opus/48000/2
a=ssrc:1234 cname:x
a=candidate:1 1 udp 2122194687 10.203.0.1 44537 typ host
m=video 9 UDP/TLS/RTP/SAVPF 96
a=mid:1
a=sendonly
a=rid:q send
a=rid:h send
a=simulcast:send q;h
a=rtpmap:96 VP8/90000
a=ssrc:42 msid:PA_x|TR_y TR_y
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
a=mid:2
"""


def test_parse_media_sections() -> None:
    sections = sdp.parse_media_sections(OFFER)
    assert [s.kind for s in sections] == ["audio", "video", "application"]
    audio, video, app = sections
    assert (audio.mid, audio.direction, audio.track_id, audio.ssrcs) == ("0", "sendonly", "5b1c-cid-audio", [1234])
    assert audio.codecs == ["opus"]
    assert video.rids == ["q", "h"] and video.simulcast
    assert (video.stream_id, video.track_id) == ("PA_x|TR_y", "TR_y")
    assert app.mid == "2"
    assert sdp.local_candidates(OFFER) == [
        ("0", 0, "candidate:1 1 udp 2122194687 10.203.0.1 44537 typ host")]


def test_candidate_json_round_trip() -> None:
    text = json.dumps({"candidate": "candidate:1 1 udp 2122194687 10.203.0.1 44537 typ host",
                       "sdpMid": "0", "sdpMLineIndex": 0})
    cand = ice.candidate_from_json(text)
    assert cand is not None and cand.ip == "10.203.0.1" and cand.port == 44537
    back = json.loads(ice.candidate_to_json(cand))
    assert back["sdpMid"] == "0" and back["sdpMLineIndex"] == 0
    assert back["candidate"].startswith("candidate:1 1 udp 2122194687 10.203.0.1 44537 typ host")
    assert ice.candidate_from_json(json.dumps({"candidate": "", "sdpMid": "0"})) is None


def test_addresses_for_url() -> None:
    assert ice.addresses_for_url("ws://127.0.0.1:7880") == ["127.0.0.1"]
    assert ice.addresses_for_url("ws://localhost:7880") == ["127.0.0.1"]
    assert ice.addresses_for_url("ws://[::1]:7880") == ["::1"]
    assert ice.addresses_for_url("wss://example.org") is None
    assert ice.addresses_for_url("wss://example.org", ["10.0.0.5"]) == ["10.0.0.5"]


async def test_host_addresses_is_task_local() -> None:
    seen: dict[str, list[str]] = {}

    async def gather(name: str, addrs: list[str]) -> None:
        with ice.host_addresses(addrs):
            await asyncio.sleep(0.01)
            seen[name] = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)

    await asyncio.gather(gather("a", ["127.0.0.1"]), gather("b", ["127.0.0.2", "::1"]))
    assert seen == {"a": ["127.0.0.1"], "b": ["127.0.0.2", "::1"]}
    with ice.host_addresses(["::1"]):
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == []


def test_host_address_policy_installed_on_first_use_not_at_import() -> None:
    """Importing the client does not patch aioice; the first ``host_addresses`` block does,
    once (the second block reuses the same wrapper)."""
    import subprocess
    import sys

    code = (
        "import aioice.ice, aiolivekit, aiolivekit.rtc\n"
        "from aiolivekit import Room\n"
        "from aiolivekit.webrtc import ice, pc\n"
        "from aiolivekit.engine import engine\n"
        "original = aioice.ice.get_host_addresses\n"
        "assert original.__module__ == 'aioice.ice', original.__module__\n"
        "with ice.host_addresses(['127.0.0.1']):\n"
        "    first = aioice.ice.get_host_addresses\n"
        "    assert first(use_ipv4=True, use_ipv6=True) == ['127.0.0.1']\n"
        "assert first is not original\n"
        "with ice.host_addresses(['::1']):\n"
        "    assert aioice.ice.get_host_addresses is first\n"
        "    assert first(use_ipv4=True, use_ipv6=True) == ['::1']\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
