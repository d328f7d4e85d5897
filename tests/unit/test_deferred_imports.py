"""aiortc imports without PyAV/dnspython; both load, fully working, on first use."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest


def _run(code: str, **env: str) -> dict[str, object]:
    import os

    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=120, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_connect_path_imports_neither_pyav_nor_dnspython() -> None:
    out = _run("""
        import json, sys
        import aiolivekit.room, aiolivekit.engine.engine, aiortc
        print(json.dumps({"av": "av" in sys.modules, "dns": "dns" in sys.modules,
                          "egress": "livekit.protocol.egress" in sys.modules}))
    """)
    assert out == {"av": False, "dns": False, "egress": False}


def test_deferred_names_resolve_to_the_real_objects_on_first_use() -> None:
    out = _run("""
        import asyncio, json, sys
        import aiolivekit, aiortc
        from aiortc import mediastreams, rtcrtpsender
        from aiortc.codecs import h264, opus
        frame = asyncio.run(mediastreams.AudioStreamTrack().recv())  # builds an av.AudioFrame
        import av, av.frame
        import aioice.ice
        print(json.dumps({
            "frame_type": type(frame).__module__ + "." + type(frame).__name__,
            "isinstance": isinstance(frame, rtcrtpsender.Frame),
            "sender_frame_is_real": rtcrtpsender.Frame is av.frame.Frame,
            "h264_av_is_real": h264.av is av,
            "opus_codec": opus.CodecContext is av.CodecContext,
            "ffmpeg_error": issubclass(h264.av.FFmpegError, Exception),
            "encoder": type(opus.OpusEncoder().codec).__name__,
            "mdns_rdclass": aioice.ice.mdns.MDNS_RDCLASS,
            "dns_loaded": "dns" in sys.modules,
        }))
    """)
    assert out["frame_type"] == "av.audio.frame.AudioFrame"
    assert out["isinstance"] is True
    assert out["sender_frame_is_real"] is True
    assert out["h264_av_is_real"] is True
    assert out["opus_codec"] is True
    assert out["ffmpeg_error"] is True
    assert out["encoder"] == "AudioCodecContext"
    assert out["mdns_rdclass"] == 1 | 0x8000
    assert out["dns_loaded"] is True


def test_protocol_package_submodules_load_on_access() -> None:
    out = _run("""
        import json, sys
        import aiolivekit.room
        import livekit.protocol as lp
        from livekit.protocol import sip
        from livekit import api
        print(json.dumps({"version": lp.__version__, "egress": lp.egress.__name__,
                          "sip": sip.__name__, "token": api.AccessToken.__name__}))
    """)
    assert out == {"version": out["version"], "egress": "livekit.protocol.egress",
                   "sip": "livekit.protocol.sip", "token": "AccessToken"}
    assert isinstance(out["version"], str) and out["version"]


@pytest.mark.parametrize("setup", ["import av", "import aiortc"])
def test_nothing_is_deferred_when_already_imported(setup: str) -> None:
    out = _run(f"""
        import json, sys
        {setup}
        import aiolivekit, aiortc
        from aiortc import rtcrtpsender
        print(json.dumps({{"av": "av" in sys.modules,
                          "real": type(rtcrtpsender.Frame).__name__ != "_LazyAttribute"}}))
    """)
    assert out == {"av": True, "real": True}


def test_opt_out_imports_eagerly() -> None:
    out = _run("""
        import json, sys
        import aiolivekit, aiortc
        print(json.dumps({"av": "av" in sys.modules}))
    """, AIOLIVEKIT_EAGER_IMPORTS="1")
    assert out == {"av": True}


def test_remote_candidate_check_does_not_load_dnspython_unless_mdns() -> None:
    out = _run("""
        import json, sys
        import aiolivekit, aiortc
        import aioice.ice
        plain = aioice.ice.mdns.is_mdns_hostname("127.0.0.1")
        after_plain = "dns" in sys.modules
        mdns = aioice.ice.mdns.is_mdns_hostname("0a1b2c3d-aaaa-bbbb.local")
        print(json.dumps({"plain": plain, "after_plain": after_plain, "mdns": mdns,
                          "after_mdns": "dns" in sys.modules,
                          "swapped": aioice.ice.mdns is sys.modules["aioice.mdns"]}))
    """)
    assert out == {"plain": False, "after_plain": False, "mdns": True, "after_mdns": True,
                   "swapped": True}
