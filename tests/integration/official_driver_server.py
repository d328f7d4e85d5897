"""Drive the official ``livekit`` Python SDK (run with the official venv's python).

Usage: python official_driver_server.py URL TOKEN STEPS_JSON

Prints one JSON object per line (events and step results) and ends with ``{"event": "done"}``
or ``{"event": "error", ...}``; exits with ``os._exit(0)`` because the FFI may abort at exit.
Steps (all bounded by a timeout):
  {"op": "wait_peer", "identity": "bob", "timeout": 15}
  {"op": "send", "payload": "hi", "topic": "greet", "reliable": true}
  {"op": "expect_data", "count": 1, "timeout": 15}
  {"op": "publish_sine", "freq": 440, "until_data": "audio-ok", "max": 25}
  {"op": "measure_audio", "seconds": 1.5, "timeout": 20}
  {"op": "wait_disconnect", "identity": "alice", "timeout": 15}
  {"op": "sleep", "seconds": 1}
  {"op": "leave"}
  {"op": "simulate", "kind": "SIMULATE_NODE_FAILURE"}
  {"op": "monitor_audio", "seconds": 10, "window": 0.2}   (one audio_window event per window)
  {"op": "report_publications"}
Connection events (reconnecting, reconnected, disconnected, ...) carry ``t`` (Unix seconds).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import numpy as np
from livekit import rtc

SAMPLE_RATE = 48000


def emit(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


async def main(url: str, token: str, steps: list[dict]) -> None:
    room = rtc.Room()
    data: list[dict] = []
    data_event = asyncio.Event()
    audio_tracks: list[rtc.Track] = []
    audio_from: dict[int, str] = {}
    video_tracks: list[rtc.Track] = []
    background: list[asyncio.Future] = []  # media pumps (kept referenced)
    track_event = asyncio.Event()
    gone: set[str] = set()
    gone_event = asyncio.Event()

    seen: list[str] = []
    seen_event = asyncio.Event()

    def note(name: str) -> None:
        seen.append(name)
        seen_event.set()
        data_event.set()

    for name in ("track_muted", "track_unmuted", "participant_metadata_changed",
                 "participant_name_changed", "track_unpublished", "track_unsubscribed",
                 "participant_attributes_changed", "room_metadata_changed"):
        def make(n: str):  # type: ignore[no-untyped-def]
            def handler(*args: object) -> None:
                emit(event=n, args=[getattr(a, "identity", None) or getattr(a, "sid", None)
                                    or str(a) for a in args])
                note(n)
            return handler
        room.on(name, make(name))

    def describe(a: object) -> object:
        if isinstance(a, list):
            return [describe(x) for x in a]
        return getattr(a, "identity", None) or getattr(a, "sid", None) or str(a)

    for name in ("reconnecting", "reconnected", "disconnected", "local_track_republished",
                 "active_speakers_changed", "connection_quality_changed",
                 "connection_state_changed"):
        def make_timed(n: str):  # type: ignore[no-untyped-def]
            def handler(*args: object) -> None:
                emit(event=n, t=time.time(), args=[describe(a) for a in args])
                note(n)
            return handler
        room.on(name, make_timed(name))

    @room.on("participant_connected")
    def _pc(p: rtc.RemoteParticipant) -> None:
        emit(event="participant_connected", identity=p.identity, name=p.name,
             metadata=p.metadata, sid=p.sid)

    @room.on("participant_disconnected")
    def _pd(p: rtc.RemoteParticipant) -> None:
        emit(event="participant_disconnected", identity=p.identity)
        gone.add(p.identity)
        gone_event.set()

    @room.on("data_received")
    def _dr(pkt: rtc.DataPacket) -> None:
        item = {"payload": bytes(pkt.data).decode(errors="replace"), "topic": pkt.topic,
                "from": pkt.participant.identity if pkt.participant else None,
                "kind": int(pkt.kind)}
        data.append(item)
        emit(event="data", **item)
        data_event.set()

    @room.on("track_published")
    def _tp(pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        emit(event="track_published", identity=p.identity, sid=pub.sid, name=pub.name,
             kind=int(pub.kind))

    @room.on("track_subscribed")
    def _ts(track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        emit(event="track_subscribed", identity=p.identity, sid=pub.sid, kind=int(track.kind))
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            audio_tracks.append(track)
            audio_from[id(track)] = p.identity
            track_event.set()
        elif track.kind == rtc.TrackKind.KIND_VIDEO:
            video_tracks.append(track)
            track_event.set()
        note("track_subscribed")

    t0 = time.monotonic()
    await room.connect(url, token, rtc.RoomOptions())
    emit(event="connected", identity=room.local_participant.identity,
         sid=room.local_participant.sid, seconds=round(time.monotonic() - t0, 3),
         remote=[{"identity": p.identity, "name": p.name, "metadata": p.metadata}
                 for p in room.remote_participants.values()])

    async def wait_for(pred, event: asyncio.Event, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), min(left, 0.2))
            except asyncio.TimeoutError:
                pass
        return True

    for step in steps:
        op = step["op"]
        timeout = float(step.get("timeout", 15))
        if op == "wait_peer":
            ident = step["identity"]
            ok = await wait_for(lambda ident=ident: any(p.identity == ident
                                            for p in room.remote_participants.values()),
                                asyncio.Event(), timeout)
            peer = next((p for p in room.remote_participants.values() if p.identity == ident),
                        None)
            emit(event="step", op=op, ok=ok,
                 peer=None if peer is None else {"identity": peer.identity, "name": peer.name,
                                                 "metadata": peer.metadata})
        elif op == "send":
            await room.local_participant.publish_data(
                step["payload"].encode(), reliable=step.get("reliable", True),
                topic=step.get("topic", ""))
            emit(event="step", op=op, ok=True)
        elif op == "expect_data":
            count = int(step.get("count", 1))
            ok = await wait_for(lambda count=count: len(data) >= count, data_event, timeout)
            emit(event="step", op=op, ok=ok, count=len(data))
        elif op == "publish_sine":
            freq = float(step.get("freq", 440))
            source = rtc.AudioSource(SAMPLE_RATE, 1)
            track = rtc.LocalAudioTrack.create_audio_track("sine", source)
            opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            pub = await room.local_participant.publish_track(track, opts)
            emit(event="published", sid=pub.sid)
            stop = step.get("until_data")
            deadline = time.monotonic() + float(step.get("max", 20))
            n = 0
            spf = SAMPLE_RATE // 100
            start = time.monotonic()
            while time.monotonic() < deadline:
                if stop and any(d["payload"] == stop for d in data):
                    break
                t = (np.arange(spf) + n * spf) / SAMPLE_RATE
                samples = (0.5 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
                frame = rtc.AudioFrame(samples.tobytes(), SAMPLE_RATE, 1, spf)
                await source.capture_frame(frame)
                n += 1
                ahead = start + n * 0.01 - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            emit(event="step", op=op, ok=True, frames=n)
        elif op == "measure_audio":
            source_id = step.get("from")

            def pick(source_id: Any = source_id) -> list[rtc.Track]:
                return [t for t in audio_tracks
                        if source_id is None or audio_from.get(id(t)) == source_id]

            ok = await wait_for(lambda: bool(pick()), track_event, timeout)
            if not ok:
                emit(event="step", op=op, ok=False, reason="no audio track")
                continue
            stream = rtc.AudioStream(pick()[-1], sample_rate=SAMPLE_RATE, num_channels=1)
            chunks: list[np.ndarray] = []
            skip = int(SAMPLE_RATE * float(step.get("skip", 0.5)))
            want = int(SAMPLE_RATE * float(step.get("seconds", 1.5)))
            got = 0
            deadline = time.monotonic() + timeout

            async def collect(stream: rtc.AudioStream = stream, chunks: list[np.ndarray] = chunks,
                              want: int = want) -> None:
                nonlocal got, skip
                async for ev in stream:
                    arr = np.frombuffer(bytes(ev.frame.data), dtype=np.int16)
                    if skip > 0:
                        skip -= len(arr)
                        continue
                    chunks.append(arr)
                    got += len(arr)
                    if got >= want:
                        return

            try:
                await asyncio.wait_for(collect(), max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass
            if got < want // 2:
                rms = float(np.sqrt(np.mean(np.concatenate(chunks).astype(np.float64) ** 2))) \
                    if chunks else 0.0
                emit(event="step", op=op, ok=bool(step.get("allow_silence")),
                     reason="too few samples", samples=got, rms=rms)
                continue
            sig = np.concatenate(chunks).astype(np.float64)
            spectrum = np.abs(np.fft.rfft(sig * np.hanning(len(sig))))
            freqs = np.fft.rfftfreq(len(sig), 1 / SAMPLE_RATE)
            peak = float(freqs[int(np.argmax(spectrum[1:])) + 1])
            rms = float(np.sqrt(np.mean(sig ** 2)))
            emit(event="step", op=op, ok=True, freq=peak, rms=rms, samples=got, source=source_id)
        elif op == "wait_disconnect":
            ident = step["identity"]
            ok = await wait_for(lambda ident=ident: ident in gone, gone_event, timeout)
            emit(event="step", op=op, ok=ok)
        elif op == "start_sine":
            freq = float(step.get("freq", 440))
            source = rtc.AudioSource(SAMPLE_RATE, 1)
            local_track = rtc.LocalAudioTrack.create_audio_track("sine", source)
            opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            local_pub = await room.local_participant.publish_track(local_track, opts)
            emit(event="published", sid=local_pub.sid)

            async def pump(source: rtc.AudioSource = source, freq: float = freq) -> None:
                spf = SAMPLE_RATE // 100
                start = time.monotonic()
                for n in range(100 * 120):
                    t = (np.arange(spf) + n * spf) / SAMPLE_RATE
                    samples = (0.5 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
                    await source.capture_frame(rtc.AudioFrame(samples.tobytes(), SAMPLE_RATE, 1,
                                                              spf))
                    ahead = start + (n + 1) * 0.01 - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)

            pump_task = asyncio.ensure_future(pump())
            emit(event="step", op=op, ok=True)
        elif op == "start_video":
            width, height = int(step.get("width", 320)), int(step.get("height", 240))
            vsource = rtc.VideoSource(width, height)
            vtrack = rtc.LocalVideoTrack.create_video_track("pattern", vsource)
            vopts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA,
                                            simulcast=bool(step.get("simulcast", False)))
            vpub = await room.local_participant.publish_track(vtrack, vopts)
            emit(event="published", sid=vpub.sid, kind="video")

            async def vpump(vsource: rtc.VideoSource = vsource, width: int = width,
                            height: int = height) -> None:
                start = time.monotonic()
                for n in range(15 * 120):
                    img = np.zeros((height, width, 4), dtype=np.uint8)
                    img[:, :, 0] = (n * 8) % 256
                    img[:, (n * 4) % width, 1] = 255
                    img[:, :, 3] = 255
                    vsource.capture_frame(rtc.VideoFrame(width, height,
                                                         rtc.VideoBufferType.RGBA,
                                                         img.tobytes()))
                    ahead = start + (n + 1) / 15 - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)

            background.append(asyncio.ensure_future(vpump()))
            emit(event="step", op=op, ok=True)
        elif op == "measure_video":
            ok = await wait_for(lambda: bool(video_tracks), track_event, timeout)
            if not ok:
                emit(event="step", op=op, ok=False, reason="no video track")
                continue
            vstream = rtc.VideoStream(video_tracks[-1])
            sizes: dict[str, int] = {}
            frames = 0

            async def vcollect(vstream: rtc.VideoStream = vstream, sizes: dict[str, int] = sizes,
                               step: dict[str, Any] = step) -> None:
                nonlocal frames
                async for ev in vstream:
                    key = f"{ev.frame.width}x{ev.frame.height}"
                    sizes[key] = sizes.get(key, 0) + 1
                    frames += 1
                    if frames >= int(step.get("frames", 20)):
                        return

            try:
                await asyncio.wait_for(vcollect(), timeout)
            except asyncio.TimeoutError:
                pass
            emit(event="step", op=op, ok=frames > 0, frames=frames, sizes=sizes)
        elif op == "mute":
            if step.get("muted", True):
                local_track.mute()
            else:
                local_track.unmute()
            emit(event="step", op=op, ok=True)
        elif op == "unpublish":
            await room.local_participant.unpublish_track(local_pub.sid)
            pump_task.cancel()
            emit(event="step", op=op, ok=True)
        elif op == "set_metadata":
            await asyncio.wait_for(room.local_participant.set_metadata(step["metadata"]), timeout)
            emit(event="step", op=op, ok=True)
        elif op == "set_subscribed":
            pubs = [pub for p in room.remote_participants.values()
                    for pub in p.track_publications.values()]
            for pub in pubs:
                pub.set_subscribed(bool(step.get("subscribed", True)))
            emit(event="step", op=op, ok=bool(pubs))
        elif op == "set_enabled":
            pubs = [pub for p in room.remote_participants.values()
                    for pub in p.track_publications.values()]
            for pub in pubs:
                pub.set_enabled(bool(step.get("enabled", True)))
            emit(event="step", op=op, ok=bool(pubs))
        elif op == "wait_event":
            name, count = step["event"], int(step.get("count", 1))
            ok = await wait_for(lambda name=name, count=count: seen.count(name) >= count,
                               seen_event, timeout)
            emit(event="step", op=op, name=name, ok=ok)
        elif op == "wait_data":
            payload = step["payload"]
            ok = await wait_for(lambda payload=payload: any(d["payload"] == payload for d in data),
                               data_event,
                                timeout)
            emit(event="step", op=op, payload=payload, ok=ok)
        elif op == "sleep":
            await asyncio.sleep(float(step.get("seconds", 1)))
        elif op == "simulate":
            kind = getattr(rtc.SimulateScenarioKind, step["kind"]) \
                if hasattr(rtc, "SimulateScenarioKind") else None
            if kind is None:
                from livekit.rtc._proto import room_pb2
                kind = room_pb2.SimulateScenarioKind.Value(step["kind"])
            await asyncio.wait_for(room.simulate_scenario(kind), timeout)
            emit(event="step", op=op, ok=True, t=time.time())
        elif op == "report_publications":
            emit(event="step", op=op, ok=True,
                 sids=sorted(room.local_participant.track_publications))
        elif op == "monitor_audio":
            ok = await wait_for(lambda: bool(audio_tracks), track_event, timeout)
            if not ok:
                emit(event="step", op=op, ok=False, reason="no audio track")
                continue
            mstream = rtc.AudioStream(audio_tracks[-1], sample_rate=SAMPLE_RATE, num_channels=1)
            per = int(SAMPLE_RATE * float(step.get("window", 0.2)))
            until = time.monotonic() + float(step.get("seconds", 10))
            buf: list[np.ndarray] = []
            have = 0

            async def monitor(mstream: rtc.AudioStream = mstream, per: int = per,
                              until: float = until) -> None:
                nonlocal have, buf
                async for ev in mstream:
                    buf.append(np.frombuffer(bytes(ev.frame.data), dtype=np.int16))
                    have += len(buf[-1])
                    if have >= per:
                        sig = np.concatenate(buf).astype(np.float64)
                        buf, have = [], 0
                        spectrum = np.abs(np.fft.rfft(sig * np.hanning(len(sig))))
                        freqs = np.fft.rfftfreq(len(sig), 1 / SAMPLE_RATE)
                        emit(event="audio_window", t=time.time(),
                             freq=float(freqs[int(np.argmax(spectrum[1:])) + 1]),
                             rms=float(np.sqrt(np.mean(sig ** 2))))
                    if time.monotonic() >= until:
                        return

            try:
                await asyncio.wait_for(monitor(), float(step.get("seconds", 10)) + 5)
            except asyncio.TimeoutError:
                pass
            emit(event="step", op=op, ok=True)
        elif op == "leave":
            await asyncio.wait_for(room.disconnect(), 10)
            emit(event="step", op=op, ok=True)
        else:
            emit(event="error", error=f"unknown op {op}")
    emit(event="done")


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(
            main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])), 120))
    except BaseException as exc:  # noqa: BLE001 - reported to the test, never hang
        emit(event="error", error=repr(exc))
    sys.stdout.flush()
    os._exit(0)
