"""The demo: an embedded server and two scripted participants on this machine's loopback.

Run with ``aiolivekit demo`` (or ``python -m aiolivekit.demo``). Alice and Bob join a room
on an in-process dev server, see each other, exchange data packets, a text stream and an
RPC, Alice publishes a 440 Hz tone and a moving video pattern, and Bob reports the tone's
frequency and the video size he receives. Everything stays on 127.0.0.1.

``aiolivekit demo --browser`` keeps them in the room and opens the server's room page
(docs/page.md): Alice plays the tone and the pattern, Bob answers chat messages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import webbrowser
from collections.abc import Callable
from typing import Any

import numpy as np

from . import (
    AudioFrame,
    AudioSource,
    AudioStream,
    LocalAudioTrack,
    LocalVideoTrack,
    RemoteParticipant,
    Room,
    RpcInvocationData,
    TrackKind,
    TrackPublishOptions,
    TrackSource,
    VideoBufferType,
    VideoFrame,
    VideoSource,
    VideoStream,
)
from .server import DevServer

SAMPLE_RATE = 48000
TONE_HZ = 440.0


def _say(who: str, text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {who:>5}: {text}", flush=True)


def dominant_frequency(samples: np.ndarray, sample_rate: int) -> float:
    """Frequency of the strongest FFT bin of ``samples`` (mono int16)."""
    data = samples.astype(np.float64) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(data))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum) * sample_rate / len(samples))


async def _tone(source: AudioSource, seconds: float) -> None:
    spc = SAMPLE_RATE // 100
    t0 = 0
    for _ in range(int(seconds * 100)):
        t = (np.arange(spc) + t0) / SAMPLE_RATE
        pcm = (np.sin(2 * np.pi * TONE_HZ * t) * 12000).astype(np.int16)
        t0 += spc
        await source.capture_frame(AudioFrame(pcm.tobytes(), SAMPLE_RATE, 1, spc))


async def _video(source: VideoSource, seconds: float, width: int, height: int) -> None:
    for i in range(int(seconds * 15)):
        rgba = np.zeros((height, width, 4), dtype=np.uint8)
        x = (i * 8) % width
        rgba[:, x : x + 32, :3] = 255
        rgba[:, :, 3] = 255
        source.capture_frame(VideoFrame(width, height, VideoBufferType.RGBA, rgba.tobytes()))
        await asyncio.sleep(1 / 15)


async def run_demo(seconds: float = 4.0, port: int = 0) -> int:
    async with DevServer(host="127.0.0.1", port=port) as server:
        _say("demo", f"embedded LiveKit server at {server.url} (keys {server.api_key}/{server.api_secret})")
        alice, bob = Room(), Room()
        got_data: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        got_text: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        subscribed: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        readers: set[asyncio.Task[None]] = set()  # keep the stream readers referenced

        @bob.on("participant_connected")
        def _on_join(p: RemoteParticipant) -> None:
            _say("bob", f"sees {p.identity} ({p.name!r}) join, metadata={p.metadata!r}")

        @bob.on("data_received")
        def _on_data(packet: object) -> None:
            text = packet.data.decode()  # type: ignore[attr-defined]
            _say("bob", f"data on topic {packet.topic!r}: {text!r}")  # type: ignore[attr-defined]
            if not got_data.done():
                got_data.set_result(text)

        def _on_text(reader: object, identity: str) -> None:
            async def read() -> None:
                text = await reader.read_all()  # type: ignore[attr-defined]
                _say("bob", f"text stream from {identity}: {len(text)} chars")
                if not got_text.done():
                    got_text.set_result(text)

            task = asyncio.ensure_future(read())
            readers.add(task)
            task.add_done_callback(readers.discard)

        bob.register_text_stream_handler("chat", _on_text)

        @bob.on("track_subscribed")
        def _on_track(track: object, publication: object, participant: RemoteParticipant) -> None:
            _say("bob", f"subscribed to {publication.name} ({publication.mime_type}) "  # type: ignore[attr-defined]
                 f"from {participant.identity}")
            if publication.kind == TrackKind.KIND_AUDIO and not subscribed.done():  # type: ignore[attr-defined]
                subscribed.set_result(track)

        await bob.connect(server.url, server.token("bob", "demo", name="Bob"))
        _say("bob", f"connected to room {bob.name!r} as {bob.local_participant.sid}")
        await alice.connect(server.url, server.token("alice", "demo", name="Alice", metadata="hi"))
        _say("alice", f"connected; sees {sorted(alice.remote_participants)}")

        @bob.local_participant.register_rpc_method("greet")
        def _greet(data: RpcInvocationData) -> str:
            return f"hello {data.caller_identity}, you said {data.payload!r}"

        await alice.local_participant.publish_data(b"ping from alice", topic="demo")
        await asyncio.wait_for(got_data, 10)
        await alice.local_participant.send_text("lorem ipsum " * 2000, topic="chat")
        await asyncio.wait_for(got_text, 10)
        answer = await alice.local_participant.perform_rpc(
            destination_identity="bob", method="greet", payload="hi", response_timeout=5)
        _say("alice", f"rpc answer: {answer!r}")

        audio = AudioSource(SAMPLE_RATE, 1)
        video = VideoSource(320, 240)
        await alice.local_participant.publish_track(
            LocalAudioTrack.create_audio_track("mic", audio),
            TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE))
        await alice.local_participant.publish_track(
            LocalVideoTrack.create_video_track("camera", video),
            TrackPublishOptions(source=TrackSource.SOURCE_CAMERA))
        freq = 0.0
        tone = asyncio.ensure_future(_tone(audio, seconds + 2))
        moving = asyncio.ensure_future(_video(video, seconds + 2, 320, 240))
        try:
            track = await asyncio.wait_for(subscribed, 15)
            stream = AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)  # type: ignore[arg-type]
            chunks: list[np.ndarray] = []
            deadline = time.monotonic() + seconds
            async for event in stream:
                chunks.append(np.frombuffer(event.frame.data, dtype=np.int16).copy())
                if time.monotonic() > deadline:
                    break
            await stream.aclose()
            pcm = np.concatenate(chunks[-100:]) if chunks else np.zeros(1, np.int16)
            freq = dominant_frequency(pcm, SAMPLE_RATE)
            _say("bob", f"received {len(chunks)} audio frames, dominant frequency {freq:.0f} Hz")
            for pub in bob.remote_participants["alice"].track_publications.values():
                if pub.kind == TrackKind.KIND_VIDEO and pub.track is not None:
                    vstream = VideoStream(pub.track)  # type: ignore[arg-type]
                    vevent = await asyncio.wait_for(vstream.__anext__(), 10)
                    _say("bob", f"video frame {vevent.frame.width}x{vevent.frame.height}")
                    await vstream.aclose()
        finally:
            tone.cancel()
            moving.cancel()
        await alice.disconnect()
        await bob.disconnect()
        await audio.aclose()
        await video.aclose()
        _say("demo", "done")
        return 0 if abs(freq - TONE_HZ) < 20 else 1


PAGE_ROOM = "demo"
DAY = 24 * 3600.0


def page_link(server: DevServer, identity: str = "you") -> str:
    """The room page URL that joins ``identity`` to the demo room at once."""
    return f"{server.page_url}?room={PAGE_ROOM}&identity={identity}&autojoin=1"


def open_browser(url: str) -> bool:
    """Open ``url`` in a graphical browser; ``False`` when there is none (a Linux machine
    without a display: console browsers would take the terminal and run no JavaScript)."""
    if sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        return bool(webbrowser.open(url, new=2))
    except webbrowser.Error:
        return False


async def run_browser_demo(port: int = 0, seconds: float | None = None,
                           opener: Callable[[str], bool] = open_browser) -> int:
    """The demo bots in room ``demo`` and the room page opened for the user, until
    Ctrl-C (or ``seconds``). Alice publishes the tone and the video pattern, Bob greets
    newcomers with a data packet and answers each chat message (``lk.chat``)."""
    async with DevServer(host="127.0.0.1", port=port) as server:
        alice, bob = Room(), Room()
        tasks: set[asyncio.Future[Any]] = set()

        def _on_chat(reader: object, identity: str) -> None:
            async def answer() -> None:
                text = await reader.read_all()  # type: ignore[attr-defined]
                _say("bob", f"chat from {identity}: {text!r}")
                await bob.local_participant.send_text(f"Bob heard {identity}: {text}",
                                                      topic="lk.chat")

            task = asyncio.ensure_future(answer())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        bob.register_text_stream_handler("lk.chat", _on_chat)

        @bob.on("participant_connected")
        def _greet(p: RemoteParticipant) -> None:
            _say("bob", f"{p.identity} joined")
            task = asyncio.ensure_future(bob.local_participant.publish_data(
                f"hello {p.identity}, type in the chat".encode(), topic="greeting",
                destination_identities=[p.identity]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        await alice.connect(server.url, server.token(
            "alice", PAGE_ROOM, name="Alice",
            attributes={"role": "tone bot", "tone": f"{TONE_HZ:.0f} Hz"}))
        await bob.connect(server.url, server.token("bob", PAGE_ROOM, name="Bob",
                                                   attributes={"role": "chat bot"}))
        audio = AudioSource(SAMPLE_RATE, 1)
        video = VideoSource(320, 240)
        await alice.local_participant.publish_track(
            LocalAudioTrack.create_audio_track("tone", audio),
            TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE))
        await alice.local_participant.publish_track(
            LocalVideoTrack.create_video_track("pattern", video),
            TrackPublishOptions(source=TrackSource.SOURCE_CAMERA))
        media = [asyncio.ensure_future(_tone(audio, DAY)),
                 asyncio.ensure_future(_video(video, DAY, 320, 240))]
        url = page_link(server)
        _say("demo", f"room page: {url}")
        _say("demo", f"inspector: {server.http_url}/inspect (Ctrl-C stops)")
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, opener, url):
            _say("demo", "no browser could be opened here: open the URL above in a browser "
                 "on this machine")
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)
            for task in [*media, *tasks]:
                task.cancel()
            await asyncio.gather(*media, *tasks, return_exceptions=True)
            await alice.disconnect()
            await bob.disconnect()
            await audio.aclose()
            await video.aclose()
        _say("demo", "done")
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aiolivekit demo", description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--browser", action="store_true",
                        help="open the room page with the bots in the room (until Ctrl-C)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    if args.browser:
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(run_browser_demo(args.port))
        return 0
    return asyncio.run(run_demo(args.seconds, args.port))


if __name__ == "__main__":
    sys.exit(main())
