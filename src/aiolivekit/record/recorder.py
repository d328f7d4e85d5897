"""``Recorder``: join a room as a hidden participant and write every subscribed track to a
file, as received (no re-encoding); optionally a mix of the audio tracks.

::

    async with Recorder(url, token, "out", duration=60, mix=True) as rec:
        await rec.wait()        # 60 s after the first media, or the room closed
    for f in rec.files:
        print(f.path, f.duration)

Opus goes into Ogg, VP8 into WebM (or Matroska), H.264 into MP4 (or Matroska); the
file of a track is ``<identity>_<track sid>.<ext>`` (:mod:`.naming`). Each track's frames
come from :class:`~aiolivekit.media.encoded_receive.EncodedFrameStream`; their timing is
:mod:`.timeline`'s. Every file starts at its track's first frame (``RecordedFile.offset``
says when that was on the recording's clock, which starts at the room's first media).
A track that ends (unpublished, unsubscribed, its participant left) closes its file;
:meth:`Recorder.stop` closes all of them (trailers written) and leaves the room.
End-to-end encrypted tracks are not recorded (listed in ``Recorder.skipped``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._tasks import cancel_and_wait
from ..errors import ConnectError
from ..media.audio_stream import AudioStream
from ..media.encoded_receive import EncodedFrameStream, ReceivedEncodedFrame
from ..room import Room
from ..types import EncryptionType, RoomOptions, TrackKind
from .bitstream import (
    H264_PPS,
    H264_SPS,
    h264_nal_units,
    h264_sps_dimensions,
    opus_channels,
    vp8_dimensions,
)
from .files import AvFile, OggOpusFile, RecordConnectError, RecordError, WavFile
from .mixdown import Mixdown
from .naming import FileNamer, container_for, format_progress
from .timeline import (
    AUDIO_RATE,
    VIDEO_RATE,
    AudioTimeline,
    RecordingClock,
    TimedFrame,
    VideoTimeline,
)

__all__ = ["RecordedFile", "Recorder"]

logger = logging.getLogger(__name__)

MIX_NAME = "mix.wav"
TICK = 0.1  # s between deadline checks and mix writes


@dataclass
class RecordedFile:
    """One file of a recording (updated while it is written)."""

    path: Path
    kind: str  # "audio", "video" or "mix"
    codec: str  # "opus", "vp8", "h264"; "pcm" for the mix
    identity: str = ""
    participant_sid: str = ""
    track_sid: str = ""
    offset: float = 0.0  # s from the recording's start to the file's first frame
    frames: int = 0
    duration: float = 0.0  # s of media written
    closed: bool = False
    error: str | None = None

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0


@dataclass
class _Track:
    """One subscribed track being recorded."""

    track: Any
    identity: str
    participant_sid: str
    kind: str
    stream: EncodedFrameStream
    task: asyncio.Task[None] | None = None
    mix_stream: AudioStream | None = None
    mix_task: asyncio.Task[None] | None = None
    audio: AudioTimeline | None = None
    first_arrival: float = 0.0  # of the first audio packet (pts 0 of the file)
    video: VideoTimeline = field(default_factory=VideoTimeline)
    file: OggOpusFile | AvFile | None = None
    info: RecordedFile | None = None


class Recorder:
    """Records a room into ``out_dir`` (see the module docstring).

    ``duration``: seconds from the first media (None: until :meth:`stop` or the room
    closes); :meth:`wait` returns then, and each file holds the media up to then on the
    media's own clock. ``mix``: also ``mix.wav``, the audio tracks decoded and mixed (mono,
    48 kHz). ``vp8_container``: ``"webm"`` or ``"mkv"``; ``h264_container``: ``"mp4"``
    or ``"mkv"``. ``connect_timeout``: seconds for joining the room.
    """

    def __init__(self, url: str, token: str, out_dir: str | os.PathLike[str], *,
                 duration: float | None = None, mix: bool = False,
                 vp8_container: str = "webm", h264_container: str = "mp4",
                 connect_timeout: float = 20.0, room_options: RoomOptions | None = None) -> None:
        container_for("vp8", vp8_container)
        container_for("h264", h264_container)
        if connect_timeout <= 0:
            raise ValueError("connect_timeout must be > 0 seconds")
        self._url = url
        self._token = token
        self.out_dir = Path(out_dir)
        self._clock = RecordingClock(duration)
        self._mix = mix
        self._containers = {"vp8": vp8_container, "h264": h264_container, "opus": "ogg"}
        self._connect_timeout = connect_timeout
        self._options = room_options or RoomOptions(auto_subscribe=True)
        if not self._options.auto_subscribe:
            raise ValueError("a Recorder subscribes to every track: auto_subscribe=True")
        self.room = Room()
        self.files: list[RecordedFile] = []
        self.skipped: list[str] = []  # tracks not recorded, with the reason
        self._tracks: dict[str, _Track] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._namer = FileNamer()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done = asyncio.Event()
        self._reason = ""
        self._started = False
        self._stopped = False
        self._stop_at: float | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._mixdown: Mixdown | None = None
        self._mix_file: WavFile | None = None
        self._mix_info: RecordedFile | None = None
        self._serial = random.getrandbits(32)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Recorder:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _check_out_dir(self) -> None:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.out_dir, prefix=".probe-"):
                pass
        except OSError as exc:
            raise RecordError(f"cannot write to {self.out_dir}: "
                              f"{exc.strerror or exc}") from exc
        self._namer = FileNamer(set(os.listdir(self.out_dir)))

    async def start(self) -> None:
        """Check the output directory, join the room, record from now on."""
        if self._started:
            raise RuntimeError("a Recorder starts once")
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._check_out_dir()
        self.room.on("track_subscribed", self._on_subscribed)
        self.room.on("track_unsubscribed", self._on_unsubscribed)
        self.room.on("disconnected", self._on_disconnected)
        try:
            await asyncio.wait_for(self.room.connect(self._url, self._token, self._options),
                                   self._connect_timeout)
        except (ConnectError, OSError, ValueError) as exc:
            await self._abandon()
            raise RecordConnectError(f"could not join the room at {self._url}: {exc}") from exc
        except asyncio.TimeoutError as exc:
            await self._abandon()
            raise RecordConnectError(f"could not join the room at {self._url}: no answer "
                                     f"within {self._connect_timeout:g} s") from exc
        self._clock.joined(self._loop.time())
        self._ticker = self._loop.create_task(self._tick())
        # tracks subscribed while connect() ran are in track_subscribed already

    async def _abandon(self) -> None:
        self._stopped = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.room.disconnect(), 5)

    async def wait(self) -> str:
        """Until the recording ends: ``"duration"`` (the duration passed), ``"stopped"``
        (:meth:`stop` or :meth:`request_stop`) or ``"disconnected"`` (the room ended)."""
        await self._done.wait()
        return self._reason

    def request_stop(self, reason: str = "stopped") -> None:
        """Make :meth:`wait` return (a signal handler's way to end a recording)."""
        if not self._done.is_set():
            self._reason = reason
            self._done.set()

    async def stop(self) -> None:
        """Close every file (trailers written), then leave the room. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.request_stop()
        loop = asyncio.get_running_loop()
        if self._stop_at is None:  # the duration's deadline, if it passed
            self._stop_at = loop.time()
        if self._ticker is not None:
            await cancel_and_wait(self._ticker)
        for rec in list(self._tracks.values()):
            self._end_track(rec)
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=10)
        self._finish_mix(self._stop_at)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.room.disconnect(), 10)

    # ------------------------------------------------------------------ status

    @property
    def started_at(self) -> float | None:
        """The event loop's time of the recording's first media (None before)."""
        return self._clock.started_at

    def elapsed(self) -> float:
        loop = self._loop
        if loop is None:
            return 0.0
        now = self._stop_at if self._stop_at is not None else loop.time()
        deadline = self._clock.deadline()
        return self._clock.elapsed(min(now, deadline) if deadline is not None else now)

    def progress_line(self) -> str:
        if self._stopped:  # what was recorded
            audio = sum(1 for f in self.files if f.kind == "audio")
            video = sum(1 for f in self.files if f.kind == "video")
        else:  # what is being recorded
            audio = sum(1 for r in self._tracks.values() if r.kind == "audio")
            video = len(self._tracks) - audio
        return format_progress(self.elapsed(), audio, video, len(self.files),
                               sum(f.size for f in self.files), self._clock.duration)

    # ------------------------------------------------------------------ room events

    def _on_disconnected(self, *_: Any) -> None:
        self.request_stop("disconnected")

    def _on_subscribed(self, track: Any, pub: Any, participant: Any) -> None:
        if self._stopped:
            return
        sid = str(pub.sid)
        if int(getattr(pub, "encryption_type", EncryptionType.NONE)) != EncryptionType.NONE:
            reason = (f"{participant.identity}/{sid}: end-to-end encrypted; not recorded")
            logger.warning("%s", reason)
            self.skipped.append(reason)
            return
        old = self._tracks.get(sid)
        if old is not None:
            self._end_track(old)
        kind = "audio" if int(track.kind) == TrackKind.KIND_AUDIO else "video"
        try:
            stream = EncodedFrameStream(track)
        except (RuntimeError, ValueError) as exc:
            reason = f"{participant.identity}/{sid}: {exc}"
            logger.error("track not recorded: %s", reason)
            self.skipped.append(reason)
            return
        rec = _Track(track, str(participant.identity), str(participant.sid), kind, stream)
        assert self._loop is not None
        rec.task = self._loop.create_task(self._record(sid, rec))
        self._closing.add(rec.task)
        rec.task.add_done_callback(self._closing.discard)
        if self._mix and kind == "audio":
            rec.mix_stream = AudioStream(track, sample_rate=AUDIO_RATE, num_channels=1)
            rec.mix_task = self._loop.create_task(self._mix_track(sid, rec.mix_stream))
            self._closing.add(rec.mix_task)
            rec.mix_task.add_done_callback(self._closing.discard)
        self._tracks[sid] = rec
        logger.info("recording %s track %s of %s", kind, sid, participant.identity)

    def _on_unsubscribed(self, track: Any, pub: Any, participant: Any) -> None:
        rec = self._tracks.get(str(pub.sid))
        if rec is not None and rec.track is track:
            self._end_track(rec)

    def _end_track(self, rec: _Track) -> None:
        """Stop taking frames of ``rec``; its task writes what is queued and closes."""
        rec.stream.close()
        mix, rec.mix_stream = rec.mix_stream, None
        if mix is not None:
            task = asyncio.ensure_future(mix.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    # ------------------------------------------------------------------ per track

    async def _record(self, sid: str, rec: _Track) -> None:
        try:
            async for frame in rec.stream:
                if self._stop_at is not None and frame.arrival > self._stop_at:
                    continue
                if self._clock.media(frame.arrival):
                    self._recording_started(frame.arrival)
                self._write(sid, rec, frame)
            if rec.audio is not None and rec.file is not None:
                for out in rec.audio.flush():
                    self._write_audio_frame(rec, out)
        except RecordError as exc:
            self._failed(rec, str(exc))
        except Exception as exc:
            logger.exception("recording track %s failed", sid)
            self._failed(rec, f"{type(exc).__name__}: {exc}")
        finally:
            rec.stream.close()
            self._close_file(rec)
            if self._tracks.get(sid) is rec:
                del self._tracks[sid]

    def _failed(self, rec: _Track, message: str) -> None:
        logger.error("track %s of %s: %s", rec.track.sid, rec.identity, message)
        if rec.info is not None:
            rec.info.error = message
        else:
            self.skipped.append(f"{rec.identity}/{rec.track.sid}: {message}")

    def _close_file(self, rec: _Track) -> None:
        file, rec.file = rec.file, None
        if file is None or rec.info is None:
            return
        try:
            file.close()
        except Exception as exc:
            logger.exception("closing %s failed", file.path)
            rec.info.error = rec.info.error or f"closing failed: {exc}"
        rec.info.duration = file.duration
        rec.info.closed = True
        logger.info("closed %s (%.2f s)", file.path, rec.info.duration)

    def _write(self, sid: str, rec: _Track, frame: ReceivedEncodedFrame) -> None:
        if rec.kind == "audio":
            self._write_audio(rec, frame)
        else:
            self._write_video(rec, frame)

    def _open(self, rec: _Track, codec: str, arrival: float) -> RecordedFile:
        _, ext = container_for(codec, self._containers[codec])
        path = self.out_dir / self._namer.name(rec.identity, str(rec.track.sid), ext)
        info = RecordedFile(path, rec.kind, codec, rec.identity, rec.participant_sid,
                            str(rec.track.sid), offset=self._clock.elapsed(arrival))
        rec.info = info
        self.files.append(info)
        return info

    def _write_audio(self, rec: _Track, frame: ReceivedEncodedFrame) -> None:
        if frame.codec != "opus":
            raise RecordError(f"audio codec {frame.codec!r} is not recorded (Opus only)")
        if rec.audio is None:
            rec.audio = AudioTimeline(opus_channels(frame.data))
            rec.first_arrival = frame.arrival
        for out in rec.audio.push(frame.data, frame.timestamp, frame.ssrc, frame.arrival):
            if rec.file is None:
                info = self._open(rec, "opus", rec.first_arrival)
                tags = {"TITLE": f"{rec.identity} {info.track_sid}",
                        "LIVEKIT_PARTICIPANT": rec.identity,
                        "LIVEKIT_TRACK_SID": info.track_sid}
                self._serial = (self._serial + 1) & 0xFFFFFFFF
                rec.file = OggOpusFile(info.path, rec.audio.channels, tags, self._serial)
            self._write_audio_frame(rec, out)

    def _past_duration(self, rec: _Track, end: float) -> bool:
        """Whether media ending ``end`` s into the file is beyond ``duration`` (counted
        on the media's own clock from the recording's start: a burst of frames received
        late is not cut short, nor does it make the file longer)."""
        duration = self._clock.duration
        return (duration is not None and rec.info is not None
                and rec.info.offset + end > duration + 1e-6)

    def _write_audio_frame(self, rec: _Track, out: TimedFrame) -> None:
        assert rec.file is not None and rec.info is not None
        if self._past_duration(rec, (out.pts + out.duration) / AUDIO_RATE):
            return
        rec.file.write(out)
        rec.info.frames += 1
        rec.info.duration = rec.file.duration

    def _write_video(self, rec: _Track, frame: ReceivedEncodedFrame) -> None:
        codec = frame.codec
        if codec not in ("vp8", "h264"):
            raise RecordError(f"video codec {codec!r} is not recorded (VP8 and H.264 only)")
        key = frame.keyframe
        size: tuple[int, int] | None = None
        if key and rec.file is None:
            size = self._video_size(codec, frame.data)
            key = size is not None  # a first key frame must say its size
        out = rec.video.push(frame.data, frame.timestamp, frame.ssrc, frame.arrival, key,
                             frame.discontinuity)
        if out is None:
            if rec.video.keyframe_request(frame.arrival):
                rec.stream.request_keyframe()
            return
        if rec.file is None:
            assert size is not None
            info = self._open(rec, codec, frame.arrival)
            fmt, _ = container_for(codec, self._containers[codec])
            rec.file = AvFile(info.path, fmt, codec, size[0], size[1])
        if self._past_duration(rec, out.pts / VIDEO_RATE + 0.001):
            return
        rec.file.write(out)
        assert rec.info is not None
        rec.info.frames += 1
        rec.info.duration = rec.file.duration

    @staticmethod
    def _video_size(codec: str, data: bytes) -> tuple[int, int] | None:
        if codec == "vp8":
            return vp8_dimensions(data)
        units = h264_nal_units(data)
        types = {u[0] & 0x1F for u in units if u}
        if H264_SPS not in types or H264_PPS not in types:
            return None  # MP4 / Matroska need the parameter sets of the first frame
        sps = next(u for u in units if u and u[0] & 0x1F == H264_SPS)
        try:
            return h264_sps_dimensions(sps)
        except ValueError:
            return None

    # ------------------------------------------------------------------ clock, mix

    def _recording_started(self, at: float) -> None:
        logger.info("recording started")
        if not self._mix:
            return
        self._mixdown = Mixdown(at, AUDIO_RATE)
        path = self.out_dir / self._namer.plain(MIX_NAME)
        self._mix_info = RecordedFile(path, "mix", "pcm")
        try:
            self._mix_file = WavFile(path, AUDIO_RATE)
        except RecordError as exc:
            self._mix_info.error = str(exc)
            logger.error("%s", exc)
        self.files.append(self._mix_info)

    async def _mix_track(self, sid: str, stream: AudioStream) -> None:
        loop = asyncio.get_running_loop()
        key = (sid, id(stream))
        try:
            async for event in stream:
                mixdown = self._mixdown
                if mixdown is None or self._stop_at is not None:
                    continue
                frame = event.frame
                samples = np.frombuffer(bytes(frame.data), dtype=np.int16)[
                    : frame.samples_per_channel]
                mixdown.add(key, samples, loop.time())
        finally:
            if self._mixdown is not None:
                self._mixdown.remove(key)

    def _write_mix(self, now: float, final: bool = False) -> None:
        mixdown, wav, info = self._mixdown, self._mix_file, self._mix_info
        if mixdown is None or wav is None or info is None:
            return
        pcm = mixdown.finish(now) if final else mixdown.take(now)
        try:
            wav.write(pcm.tobytes())
        except OSError as exc:
            info.error = f"writing failed: {exc}"
            logger.error("writing %s failed: %s", wav.path, exc)
            self._mix_file = None
            return
        info.duration = wav.duration
        info.frames = wav.samples

    def _finish_mix(self, now: float) -> None:
        self._write_mix(now, final=True)
        wav, self._mix_file = self._mix_file, None
        if wav is not None:
            wav.close()
            if self._mix_info is not None:
                self._mix_info.closed = True
                self._mix_info.duration = wav.duration

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK)
            now = loop.time()
            deadline = self._clock.deadline()
            if deadline is not None and now >= deadline:
                self.request_stop("duration")
                self._stop_at = deadline  # frames after the deadline are not written
            self._write_mix(min(now, deadline) if deadline is not None else now)
