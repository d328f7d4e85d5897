"""The user side of tests/integration/test_agent_real.py, written against ``livekit.rtc``.

    python tone_user.py URL TOKEN

runs on the official SDK (its venv) or on aiolivekit (``TONE_USER_SDK=aiolivekit``: the
drop-in switch is installed first). It joins, publishes a microphone track (silence),
waits for the agent's ``lk.agent.state`` to be ``listening``, calls the agent's RPC method
``probe``, then "speaks" a 1 s 440 Hz burst and records until the agent has answered and
listens again. It prints one JSON object: the states seen, the ``lk.transcription`` streams
(sender, text, attributes), the dominant frequency and length of the answer heard, the RPC
reply, its own microphone track sid and the agent's identity and track sids. Exit code 0
when it got that far, 1 with ``{"error": ...}`` otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

if os.environ.get("TONE_USER_SDK") == "aiolivekit":
    import aiolivekit.compat

    aiolivekit.compat.install()

import numpy as np
from livekit import rtc

RATE = 48000
FRAME = 480
STATE = "lk.agent.state"


def dominant_hz(samples: np.ndarray) -> float:
    x = samples.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum) * RATE / len(x))


async def until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out ({timeout} s) waiting for {what}")
        await asyncio.sleep(0.05)


async def main(url: str, token: str) -> dict[str, Any]:
    room = rtc.Room()
    states: list[str] = []
    transcripts: list[list[Any]] = []
    heard: list[np.ndarray] = []
    tasks: list[asyncio.Task[Any]] = []
    speech = {"samples": np.zeros(0, np.int16)}

    def note_state(participant: rtc.Participant) -> None:
        state = participant.attributes.get(STATE)
        if state and (not states or states[-1] != state):
            states.append(state)

    room.on("participant_attributes_changed", lambda changed, p: note_state(p))
    room.on("participant_connected", note_state)

    async def read_transcript(reader: rtc.TextStreamReader, identity: str) -> None:
        text = await reader.read_all()
        transcripts.append([identity, text, dict(reader.info.attributes or {})])

    room.register_text_stream_handler(
        "lk.transcription",
        lambda reader, identity: tasks.append(asyncio.ensure_future(
            read_transcript(reader, identity))))

    async def listen(track: rtc.Track) -> None:
        async for event in rtc.AudioStream(track, sample_rate=RATE, num_channels=1):
            heard.append(np.frombuffer(bytes(event.frame.data), np.int16).copy())

    def on_sub(track: rtc.Track, publication: Any, participant: Any) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            tasks.append(asyncio.ensure_future(listen(track)))

    room.on("track_subscribed", on_sub)
    try:
        await asyncio.wait_for(room.connect(url, token), 30)
        source = rtc.AudioSource(RATE, 1)
        track = rtc.LocalAudioTrack.create_audio_track("mic", source)
        publication = await asyncio.wait_for(room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)), 30)

        async def microphone() -> None:  # 10 ms frames: silence unless a burst is queued
            while True:
                chunk = speech["samples"][:FRAME]
                speech["samples"] = speech["samples"][FRAME:]
                data = np.zeros(FRAME, np.int16)
                data[:len(chunk)] = chunk
                await source.capture_frame(rtc.AudioFrame(data.tobytes(), RATE, 1, FRAME))

        tasks.append(asyncio.ensure_future(microphone()))
        await until(lambda: states and states[-1] == "listening", 120,
                    "the agent to join and listen")
        agent = next(p for p in room.remote_participants.values() if STATE in p.attributes)
        reply = json.loads(await asyncio.wait_for(room.local_participant.perform_rpc(
            destination_identity=agent.identity, method="probe", payload="hello",
            response_timeout=15), 20))

        heard.clear()
        t = np.arange(RATE) / RATE
        speech["samples"] = (9000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        await until(lambda: "speaking" in states and states[-1] == "listening", 60,
                    "the agent to answer and listen again")
        await until(lambda: any("answer" in x[1] for x in transcripts), 10,
                    "the agent's transcription")
        audio = np.concatenate(heard) if heard else np.zeros(0, np.int16)
        idx = np.flatnonzero(np.abs(audio) > 1500)
        answer = audio[idx[0]:idx[-1] + 1] if len(idx) else audio[:0]
        return {
            "sdk": rtc.__name__,
            "states": states,
            "transcripts": transcripts,
            "heard_hz": dominant_hz(answer) if len(answer) > 1024 else 0.0,
            "heard_samples": len(answer),
            "rpc": reply,
            "mic_sid": publication.sid,
            "agent": agent.identity,
            "agent_tracks": sorted(agent.track_publications),
        }
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(room.disconnect(), 10)
        except Exception as exc:  # noqa: BLE001  (reported; the result is already made)
            print(f"disconnect: {exc!r}", file=sys.stderr)


if __name__ == "__main__":
    try:
        result = asyncio.run(main(sys.argv[1], sys.argv[2]))
    except Exception as exc:  # noqa: BLE001  (the test prints it)
        print(json.dumps({"error": repr(exc)}))
        sys.exit(1)
    print(json.dumps(result))
