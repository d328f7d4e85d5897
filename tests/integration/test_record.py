"""``Recorder`` / ``aiolivekit record`` against real servers: a published 440 Hz tone and a
frame-counter video pattern recorded for a few seconds; the files are decoded with PyAV
(frequency by FFT, counters read from the frames, durations)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from test_room_media import RATE, H, Tone, W, counter_frame, read_counter

from aiolivekit import (
    LocalAudioTrack,
    LocalVideoTrack,
    Room,
    TrackKind,
    TrackPublishOptions,
    TrackSource,
    VideoBufferType,
    VideoCodec,
    VideoFrame,
    VideoSource,
    VideoStream,
)
from aiolivekit.media.encoded_receive import EncodedFrameStream
from aiolivekit.record import RecordConnectError, Recorder, recorder_token
from aiolivekit.testing.servers import free_port

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

TIMEOUT = 30.0
SECONDS = 5.0


class Publisher:
    """alice: a 440 Hz tone and a 30 fps counter pattern."""

    def __init__(self) -> None:
        self.room = Room()
        self.tone: Tone | None = None
        self.source = VideoSource(W, H)
        self.count = 0
        self._feeder: asyncio.Task[None] | None = None
        self.audio_pub: Any = None

    async def start(self, server: Any, codec: VideoCodec = VideoCodec.VP8,
                    room: str = "test-room", red: bool = False) -> None:
        await asyncio.wait_for(self.room.connect(server.url, server.token("alice", room)), 30)
        self.tone = Tone(440.0)
        self._feeder = asyncio.ensure_future(self._feed())
        audio = LocalAudioTrack.create_audio_track("tone", self.tone.source)
        self.audio_pub = await self.room.local_participant.publish_track(
            audio, TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE, red=red))
        video = LocalVideoTrack.create_video_track("pattern", self.source)
        await self.room.local_participant.publish_track(
            video, TrackPublishOptions(source=TrackSource.SOURCE_CAMERA, video_codec=codec))

    async def _feed(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while True:
            self.source.capture_frame(counter_frame(self.count % 256))
            self.count += 1
            await asyncio.sleep(max(0.0, t0 + self.count / 30 - loop.time()))

    async def close(self) -> None:
        if self._feeder is not None:
            self._feeder.cancel()
            with pytest.raises(asyncio.CancelledError):
                await self._feeder
        if self.tone is not None:
            await self.tone.close()
        await self.source.aclose()
        await self.room.disconnect()


def listing(directory: Path, pattern: str = "*") -> list[Path]:
    return sorted(directory.glob(pattern))


def peak(samples: np.ndarray, rate: int = RATE) -> float:
    x = samples.astype(np.float64)[-32768:]
    assert np.abs(x).max() > 1000, "silence"
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as c:
        chunks = [f.to_ndarray().reshape(-1, f.samples)[0] for f in c.decode(audio=0)]
        rate = c.streams.audio[0].rate
    data = np.concatenate(chunks)
    if data.dtype.kind == "f":
        data = data * 32767
    return data, rate


def decode_video(path: Path) -> tuple[list[int], list[float], tuple[int, int]]:
    counters: list[int] = []
    times: list[float] = []
    size = (0, 0)
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            size = (f.width, f.height)
            y = f.to_ndarray(format="yuv420p")[: f.height]
            frame = VideoFrame(f.width, f.height, VideoBufferType.I420,
                               bytearray(y.tobytes() + bytes(f.width * f.height // 2)))
            counters.append(read_counter(frame))
            times.append(float(f.time))
    return counters, times, size


def check_video(path: Path, seconds: float, written: int | None = None) -> None:
    counters, times, size = decode_video(path)
    assert size == (W, H)
    # the publisher's encoder may skip frames on a loaded machine; every frame written
    # decodes, and the pattern's frames come in order
    assert len(counters) >= seconds * 30 * 0.6, len(counters)
    if written is not None:
        assert len(counters) == written
    diffs = [(b - a) % 256 for a, b in itertools.pairwise(counters)]
    assert all(1 <= d <= 10 for d in diffs), counters  # the pattern's frames, in order
    interval = float(np.median(np.diff(times)))
    assert abs(interval - 1 / 30) < 0.01
    duration = times[-1] - times[0] + interval
    assert abs(duration - seconds) <= 0.05 * seconds, duration


def check_audio(path: Path, seconds: float) -> None:
    samples, rate = decode_audio(path)
    assert rate == RATE
    assert abs(peak(samples) - 440.0) < 5
    duration = len(samples) / rate
    assert abs(duration - seconds) <= 0.05 * seconds, duration


@pytest.mark.parametrize("codec", [VideoCodec.VP8, VideoCodec.H264], ids=["vp8", "h264"])
async def test_record_tone_and_pattern(any_server: Any, tmp_path: Path,
                                       codec: VideoCodec) -> None:
    alice = Publisher()
    try:
        await alice.start(any_server, codec)
        token = recorder_token(any_server.api_key, any_server.api_secret, "test-room")
        async with Recorder(any_server.url, token, tmp_path, duration=SECONDS,
                            mix=True) as rec:
            reason = await asyncio.wait_for(rec.wait(), TIMEOUT)
            assert not alice.room.remote_participants  # the recorder is hidden
            video_tracks = [pub.track for p in rec.room.remote_participants.values()
                            for pub in p.track_publications.values()
                            if pub.track is not None and pub.kind == TrackKind.KIND_VIDEO]
            assert len(video_tracks) == 1
            assert video_tracks[0].frames_received == 0  # nothing decoded: only written
        assert reason == "duration"
    finally:
        await alice.close()
    by_kind = {f.kind: f for f in rec.files}
    assert sorted(by_kind) == ["audio", "mix", "video"], rec.files
    assert all(f.closed and f.error is None for f in rec.files), rec.files
    ext = "webm" if codec == VideoCodec.VP8 else "mp4"
    audio, video = by_kind["audio"], by_kind["video"]
    assert audio.path.name == f"alice_{audio.track_sid}.ogg"
    assert video.path.name == f"alice_{video.track_sid}.{ext}"
    assert [p.name for p in listing(tmp_path)] == sorted(
        f.path.name for f in rec.files)
    # every file starts at its track's first frame: the video's waits for a key frame
    # (H.264 after a PLI on a loaded machine), its offset on the recording's clock says when
    assert min(f.offset for f in rec.files) < 0.05
    assert video.offset < 1.0, video.offset
    check_audio(audio.path, SECONDS - audio.offset)
    check_video(video.path, SECONDS - video.offset, video.frames)
    mix, rate = decode_audio(by_kind["mix"].path)
    assert abs(peak(mix, rate) - 440.0) < 5
    assert abs(len(mix) / rate - SECONDS) <= 0.05 * SECONDS


async def test_track_that_ends_closes_its_file(embedded_server: Any, tmp_path: Path) -> None:
    alice = Publisher()
    try:
        await alice.start(embedded_server)
        token = recorder_token(embedded_server.api_key, embedded_server.api_secret,
                               "test-room", identity="rec")
        async with Recorder(embedded_server.url, token, tmp_path) as rec:
            async def two_files() -> None:
                while len(rec.files) < 2 or rec.elapsed() < 2.0:
                    await asyncio.sleep(0.05)
            await asyncio.wait_for(two_files(), TIMEOUT)
            await alice.room.local_participant.unpublish_track(alice.audio_pub.sid)
            audio = next(f for f in rec.files if f.kind == "audio")

            async def closed() -> None:
                while not audio.closed:
                    await asyncio.sleep(0.05)
            await asyncio.wait_for(closed(), 10)
            video = next(f for f in rec.files if f.kind == "video")
            assert not video.closed
            await asyncio.sleep(1.0)
    finally:
        await alice.close()
    assert video.closed and video.duration > audio.duration + 0.5
    samples, rate = decode_audio(audio.path)
    assert abs(peak(samples) - 440.0) < 5
    assert abs(len(samples) / rate - audio.duration) < 0.1


async def test_tracks_published_after_joining_are_recorded(embedded_server: Any,
                                                           tmp_path: Path) -> None:
    token = recorder_token(embedded_server.api_key, embedded_server.api_secret, "test-room")
    alice = Publisher()
    try:
        async with Recorder(embedded_server.url, token, tmp_path, duration=3.0) as rec:
            await asyncio.sleep(0.5)
            assert rec.files == [] and rec.started_at is None
            await alice.start(embedded_server)  # joins and publishes now
            assert await asyncio.wait_for(rec.wait(), TIMEOUT) == "duration"
    finally:
        await alice.close()
    kinds = sorted(f.kind for f in rec.files)
    assert kinds == ["audio", "video"]
    # the tracks were published one after the other: the second file starts later on
    # the recording's clock, and ends with the recording as the first one does
    assert min(f.offset for f in rec.files) < 0.05
    for f in rec.files:
        assert f.offset < 1.5
        (check_audio if f.kind == "audio" else check_video)(f.path, 3.0 - f.offset)


async def test_empty_room_stops_after_the_duration(embedded_server: Any,
                                                  tmp_path: Path) -> None:
    token = recorder_token(embedded_server.api_key, embedded_server.api_secret, "empty")
    loop = asyncio.get_running_loop()
    async with Recorder(embedded_server.url, token, tmp_path, duration=1.0, mix=True) as rec:
        t0 = loop.time()
        assert await asyncio.wait_for(rec.wait(), TIMEOUT) == "duration"
        assert 0.9 <= loop.time() - t0 <= 1.5
    assert rec.files == [] and listing(tmp_path) == []
    assert rec.progress_line().startswith("recording 0:00.0 / 0:01.0  tracks 0 audio")


async def test_encoded_frame_stream_then_a_video_stream(embedded_server: Any) -> None:
    """The hook under the recorder: VP8 frames as sent (decodable from the first key
    frame), not decoded meanwhile; a VideoStream opened later decodes from a key frame."""
    alice = Publisher()
    bob = Room()
    try:
        await alice.start(embedded_server)
        await asyncio.wait_for(bob.connect(embedded_server.url, embedded_server.token("bob")),
                               30)

        async def video_track() -> Any:
            while True:
                for p in bob.remote_participants.values():
                    for pub in p.track_publications.values():
                        if pub.track is not None and pub.kind == TrackKind.KIND_VIDEO:
                            return pub.track
                await asyncio.sleep(0.05)
        track = await asyncio.wait_for(video_track(), TIMEOUT)
        stream = EncodedFrameStream(track)
        frames = []

        async def collect(n: int) -> None:
            async for f in stream:
                frames.append(f)
                if len(frames) >= n:
                    return
        await asyncio.wait_for(collect(45), TIMEOUT)
        assert {(f.kind, f.codec) for f in frames} == {("video", "vp8")}
        steps = {(b.timestamp - a.timestamp) & 0xFFFFFFFF
                 for a, b in itertools.pairwise(frames)}
        assert min(steps) > 0 and max(steps) < 90000 // 5
        first_key = next(i for i, f in enumerate(frames) if f.keyframe)
        decoder = av.CodecContext.create("vp8", "r")
        seen = []
        for f in frames[first_key:]:
            for pic in decoder.decode(av.Packet(f.data)):
                y = pic.to_ndarray(format="yuv420p")[:H].tobytes()
                seen.append(read_counter(VideoFrame(W, H, VideoBufferType.I420,
                                                    bytearray(y + bytes(W * H // 2)))))
        assert len(seen) >= 30 and all(1 <= (b - a) % 256 <= 10
                                       for a, b in itertools.pairwise(seen)), seen
        assert track.frames_received == 0  # nothing was decoded meanwhile
        video = VideoStream(track, format=VideoBufferType.I420)
        decoded: list[int] = []

        async def read() -> None:
            async for ev in video:
                decoded.append(read_counter(ev.frame))
                if len(decoded) >= 10:
                    return
        await asyncio.wait_for(read(), TIMEOUT)
        assert all(1 <= (b - a) % 256 <= 10 for a, b in itertools.pairwise(decoded)), decoded
        await video.aclose()
        # the track ends: so does the encoded stream
        await alice.room.local_participant.unpublish_track(
            next(p.sid for p in alice.room.local_participant.track_publications.values()
                 if p.kind == TrackKind.KIND_VIDEO))

        async def drain() -> None:
            async for _ in stream:
                pass
        await asyncio.wait_for(drain(), TIMEOUT)
    finally:
        await bob.disconnect()
        await alice.close()


async def test_video_plays_on_a_recycled_receiver_after_a_tap(any_server: Any) -> None:
    """A tap leaves aiortc's decoder off after its stream closed; livekit-server then
    reuses the m-line (and receiver) for the next video track, whose VideoStream must
    play (the embedded server gives it a new m-line)."""
    alice = Publisher()
    bob = Room()

    async def video_of(sid_not: str = "") -> Any:
        while True:
            for p in bob.remote_participants.values():
                for pub in p.track_publications.values():
                    if (pub.track is not None and pub.kind == TrackKind.KIND_VIDEO
                            and pub.sid != sid_not):
                        return pub.track
            await asyncio.sleep(0.05)

    try:
        await alice.start(any_server)
        await asyncio.wait_for(bob.connect(any_server.url, any_server.token("bob")), 30)
        first = await asyncio.wait_for(video_of(), TIMEOUT)
        stream = EncodedFrameStream(first)
        got = 0
        async for _ in stream:
            got += 1
            if got >= 5:
                break
        stream.close()
        lp = alice.room.local_participant
        old = next(p for p in lp.track_publications.values() if p.kind == TrackKind.KIND_VIDEO)
        await lp.unpublish_track(old.sid)

        async def unsubscribed() -> None:
            while not first._ended:
                await asyncio.sleep(0.02)
        await asyncio.wait_for(unsubscribed(), TIMEOUT)
        await asyncio.sleep(0.5)  # the m-line went inactive: the next track reuses it
        await lp.publish_track(LocalVideoTrack.create_video_track("again", alice.source),
                               TrackPublishOptions(source=TrackSource.SOURCE_CAMERA))
        second = await asyncio.wait_for(video_of(old.sid), TIMEOUT)
        video = VideoStream(second, format=VideoBufferType.I420)
        counters: list[int] = []

        async def read() -> None:
            async for ev in video:
                counters.append(read_counter(ev.frame))
                if len(counters) >= 10:
                    return
        try:
            await asyncio.wait_for(read(), TIMEOUT)
        finally:
            await video.aclose()
        assert all(1 <= (b - a) % 256 <= 10 for a, b in itertools.pairwise(counters))
    finally:
        await bob.disconnect()
        await alice.close()


async def test_red_audio_is_recorded_once(embedded_server: Any, tmp_path: Path) -> None:
    """RED packets carry the previous packet again: written once, the tone intact."""
    alice = Publisher()
    try:
        await alice.start(embedded_server, red=True)
        assert alice.audio_pub.mime_type.lower() == "audio/red"
        token = recorder_token(embedded_server.api_key, embedded_server.api_secret,
                               "test-room")
        async with Recorder(embedded_server.url, token, tmp_path, duration=3.0) as rec:
            await asyncio.wait_for(rec.wait(), TIMEOUT)
    finally:
        await alice.close()
    audio = next(f for f in rec.files if f.kind == "audio")
    check_audio(audio.path, 3.0)
    assert audio.frames <= 3.0 * 50 * 1.05  # 20 ms packets, not twice as many


async def test_recorder_refuses_bad_input(embedded_server: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    good = recorder_token(embedded_server.api_key, embedded_server.api_secret, "r")
    with pytest.raises(Exception, match="cannot write to"):
        await Recorder(embedded_server.url, good, blocker / "sub").start()
    bad = recorder_token(embedded_server.api_key, "not-the-secret", "r")
    with pytest.raises(RecordConnectError, match="could not join"):
        await asyncio.wait_for(Recorder(embedded_server.url, bad, tmp_path / "o").start(), 20)


# ----------------------------------------------------------------------------- the CLI


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("LIVEKIT_API_KEY", None)
    env.pop("LIVEKIT_API_SECRET", None)
    return env


async def _record_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiolivekit", "record", *args, env=_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def _finish(proc: asyncio.subprocess.Process, timeout: float = TIMEOUT) -> tuple[int, str]:
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_cli_records_for_a_duration(embedded_server: Any, tmp_path: Path) -> None:
    alice = Publisher()
    try:
        await alice.start(embedded_server)
        proc = await _record_cli(embedded_server.url, "--room", "test-room",
                                 "--out", str(tmp_path), "--duration", "3")
        rc, err = await _finish(proc)
    finally:
        await alice.close()
    assert rc == 0, err
    lines = err.splitlines()
    assert any("recording 0:0" in line and "tracks 1 audio, 1 video" in line
               for line in lines), err
    assert "the duration passed; 2 file(s)" in err
    files = listing(tmp_path)
    assert [p.suffix for p in files] == [".ogg", ".webm"], files
    assert all(p.name.startswith("alice_TR_") for p in files)
    # the summary: "<path>  <kind> <codec>  <length> s (from <offset> s)  <size>  ok"
    offsets = {}
    for p in files:
        line = next(x for x in lines if str(p) in x)
        assert line.endswith("  ok"), line
        offsets[p] = float(line.split("(from ")[1].split(" s)")[0])
    assert min(offsets.values()) < 0.1 and max(offsets.values()) < 0.5
    check_audio(files[0], 3.0 - offsets[files[0]])
    check_video(files[1], 3.0 - offsets[files[1]])


async def test_cli_sigint_leaves_decodable_files(embedded_server: Any, tmp_path: Path) -> None:
    alice = Publisher()
    try:
        await alice.start(embedded_server)
        proc = await _record_cli(embedded_server.url, "--room", "test-room",
                                 "--out", str(tmp_path), "--vp8-container", "mkv")
        assert proc.stderr is not None

        async def recording() -> None:
            while True:
                line = (await proc.stderr.readline()).decode()  # type: ignore[union-attr]
                assert line, "the recorder ended early"
                if "recording 0:02" in line and "files 2" in line:
                    return
        await asyncio.wait_for(recording(), TIMEOUT)
        proc.send_signal(signal.SIGINT)
        rc, err = await _finish(proc)
    finally:
        await alice.close()
    assert rc == 0, err
    assert "stopped by a signal" in err
    (audio,) = listing(tmp_path, "alice_*.ogg")
    (video,) = listing(tmp_path, "alice_*.mkv")
    samples, rate = decode_audio(audio)
    assert abs(peak(samples) - 440.0) < 5 and len(samples) / rate > 1.5
    counters, _, size = decode_video(video)
    assert size == (W, H) and len(counters) > 30


async def test_cli_killed_leaves_readable_files(embedded_server: Any, tmp_path: Path) -> None:
    """SIGKILL: no trailers, yet Ogg, WebM and WAV decode up to about a second before."""
    alice = Publisher()
    try:
        await alice.start(embedded_server)
        proc = await _record_cli(embedded_server.url, "--room", "test-room",
                                 "--out", str(tmp_path), "--mix")
        assert proc.stderr is not None

        async def recording() -> None:
            while True:
                line = (await proc.stderr.readline()).decode()  # type: ignore[union-attr]
                assert line, "the recorder ended early"
                if "recording 0:03" in line and "files 3" in line:
                    return
        await asyncio.wait_for(recording(), TIMEOUT)
        proc.kill()
        await _finish(proc)
    finally:
        await alice.close()
    (audio,) = listing(tmp_path, "alice_*.ogg")
    (video,) = listing(tmp_path, "alice_*.webm")
    samples, rate = decode_audio(audio)
    assert abs(peak(samples) - 440.0) < 5 and len(samples) / rate > 2.0
    counters, _, size = decode_video(video)
    assert size == (W, H) and len(counters) > 45
    assert all(1 <= (b - a) % 256 <= 10 for a, b in itertools.pairwise(counters))
    mix, rate = decode_audio(tmp_path / "mix.wav")
    assert abs(peak(mix, rate) - 440.0) < 5 and len(mix) / rate > 2.0


async def test_cli_bad_input_fails_fast(embedded_server: Any, tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [
        # an unwritable --out: checked before joining
        (["--room", "r", "--out", str(blocker / "sub")], 2, "cannot write to"),
        # a refused token
        (["--room", "r", "--out", str(tmp_path / "o"), "--api-key", "devkey",
          "--api-secret", "wrong"], 3, "could not join"),
        (["--room", "r", "--out", str(tmp_path / "o"), "--token", "x.y.z",
          "--api-key", "k"], 2, "not both"),
        (["--out", str(tmp_path / "o")], 2, "--room is required"),
    ]
    for args, code, message in cases:
        t0 = loop.time()
        rc, err = await _finish(await _record_cli(embedded_server.url, *args))
        assert (rc, message in err) == (code, True), (args, rc, err)
        assert loop.time() - t0 < 20
    # nobody listens on this port
    rc, err = await _finish(await _record_cli(f"ws://127.0.0.1:{free_port()}", "--room", "r",
                                              "--out", str(tmp_path / "o")))
    assert rc == 3 and "could not join" in err, err
