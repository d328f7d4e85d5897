"""livekit-client (Chromium) and rtc-node resume after a signal cut, on our server and on
livekit-server.

alice is livekit-client 2.23 in headless Chromium (or @livekit/rtc-node), joined through a
:class:`~aiolivekit.testing.faults.TcpProxy` in front of the signal port, publishing a
523 Hz tone; bob is the official Python SDK, joined directly. The proxy cuts alice's
signal (RST): the client must emit ``signalReconnecting`` (livekit-client) or
``reconnecting`` (rtc-node) then ``reconnected`` (a resume:
same participant sid, same publication sid), bob must not see her leave, and bob hears
the tone (FFT) right after she reconnected. Run on both servers in the same test so the
times compare.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from aiolivekit.server import DevServer
from aiolivekit.testing.faults import TcpProxy
from aiolivekit.testing.servers import ServerInfo

from .official import events_of, official_available, start_driver, step

pytestmark = [pytest.mark.netns, pytest.mark.browser, pytest.mark.official_sdk]

TONE = 523.0
RESUME_BOUND = 10.0   # cut -> reconnected
HEARD_BOUND = 5.0     # reconnected -> tone measured at bob (1 s of audio included)


async def _signal_cut(client: str, info: ServerInfo) -> dict[str, float]:
    host, port = info.url.removeprefix("ws://").rsplit(":", 1)
    async with TcpProxy((host, int(port))) as proxy:
        alice = start_driver(client, [
            {"op": "connect", "url": proxy.url(), "token": info.token("alice")},
            {"op": "wait_participant", "identity": "bob", "timeout": 20},
            {"op": "publish_tone", "freq": TONE, "seconds": 60, "amplitude": 0.5},
            {"op": "local_publications"},
            {"op": "wait_signal", "name": "check", "timeout": 60},
            {"op": "local_publications"},
            {"op": "wait_signal", "name": "end", "timeout": 30},
            {"op": "disconnect"},
        ], timeout=120)
        bob = start_driver("official_py", [
            {"op": "connect", "url": info.url, "token": info.token("bob")},
            {"op": "wait_participant", "identity": "alice", "timeout": 30},
            {"op": "subscribe_detect_tone", "identity": "alice", "seconds": 1.0, "timeout": 30,
             "keep": True},
            {"op": "wait_signal", "name": "measure", "timeout": 60},
            {"op": "subscribe_detect_tone", "identity": "alice", "seconds": 1.0, "skip": 0.0,
             "timeout": 20},
            {"op": "wait_signal", "name": "end", "timeout": 30},
            {"op": "disconnect"},
        ], timeout=120)
        async with alice, bob:
            first = await bob.wait_for(op="subscribe_detect_tone", timeout=60)
            assert abs(first["freq"] - TONE) < 5, first
            before = await alice.wait_for(op="local_publications", timeout=10)
            t_cut = time.time()
            await proxy.cut()
            # livekit-client 2.x announces a resume as SignalReconnecting (Reconnecting is
            # for a full reconnect)
            reconnecting = await alice.wait_for(
                lambda e: e.get("event") in ("signal_reconnecting", "reconnecting"), timeout=20)
            reconnected = await alice.wait_for(event="reconnected", timeout=RESUME_BOUND + 20)
            bob.signal("measure")
            heard = await bob.wait_for(lambda e: e.get("op") == "subscribe_detect_tone"
                                       and e is not first, timeout=30)
            t_heard = time.time()
            alice.signal("check")
            after = await alice.wait_for(lambda e: e.get("op") == "local_publications"
                                         and e is not before, timeout=10)
            alice.signal("end")
            bob.signal("end")
            a_events = await alice.finish()
            b_events = await bob.finish()
    assert abs(heard["freq"] - TONE) < 5 and heard["rms"] > 1000, heard
    assert before["sids"] and after["sids"] == before["sids"], (before, after)
    assert after["participant_sid"] == before["participant_sid"]
    assert len(events_of(a_events, "reconnected")) == 1
    if client == "browser":  # livekit-client: Reconnecting means a full reconnect
        assert not events_of(a_events, "reconnecting"), "a full reconnect, not a resume"
    assert reconnecting["t"] <= reconnected["t"]
    # bob sees alice leave only at the very end (her disconnect step), not at the cut
    until_heard = b_events[:b_events.index(heard)]
    assert not [e for e in until_heard if e.get("event") == "participant_disconnected"], \
        until_heard
    assert step(b_events, "disconnect")["ok"]
    return {
        "cut_to_reconnecting": reconnecting["t"] - t_cut,
        "cut_to_reconnected": reconnected["t"] - t_cut,
        "reconnected_to_heard": t_heard - reconnected["t"],
    }


@pytest.mark.parametrize("client", ["browser", "node"])
async def test_client_resumes_after_a_signal_cut(livekit_server: ServerInfo, client: str) -> None:
    for kind in (client, "official_py"):
        reason = official_available(kind)
        if reason:
            pytest.skip(reason)
    theirs = await _signal_cut(client, livekit_server)
    async with DevServer(port=0) as server:
        info = ServerInfo("embedded", server.url, server.api_key, server.api_secret)
        ours = await _signal_cut(client, info)
    print(f"{client} on livekit-server:", {k: round(v, 3) for k, v in theirs.items()})
    print(f"{client} on embedded server:", {k: round(v, 3) for k, v in ours.items()})
    results: dict[str, Any] = {"ours": ours, "theirs": theirs}
    assert ours["cut_to_reconnected"] < RESUME_BOUND, results
    assert ours["reconnected_to_heard"] < HEARD_BOUND, results
    assert ours["cut_to_reconnected"] <= theirs["cut_to_reconnected"] + 1.0, results
