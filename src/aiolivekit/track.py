"""Track classes: local tracks wrap a media source, remote tracks wrap an aiortc track.

Internal contract with the client engine
----------------------------------------
Local tracks (``LocalAudioTrack`` / ``LocalVideoTrack``) implement :class:`PublishableTrack`,
the one typed protocol ``LocalParticipant.publish_track`` and the engine use::

    local_track._rtc_track          # aiortc MediaStreamTrack (kind "audio"/"video"); its
                                    # ``id`` (a uuid4) is the AddTrackRequest ``cid``; recv()
                                    # yields pre-encoded av.Packets once a sender is attached
    local_track._configure(options: TrackPublishOptions) -> None
                                    # before publishing: Opus channels/bitrate/DTX,
                                    # VP8/H264 max_bitrate/max_framerate
    local_track._attach_sender(sender: RTCRtpSender) -> None
                                    # after addTransceiver: learns the negotiated codec,
                                    # handles PLI/FIR, kept for get_stats()
    local_track._on_mute_changed: Callable[[bool], None] | None
                                    # set by the participant; mute()/unmute() call it
    local_track._set_sid(sid: str) -> None
    local_track._dimensions() -> (width, height)   # video, for the AddTrackRequest
    local_track._num_channels() -> int             # audio, for the AddTrackRequest
    local_track._close() -> None    # on unpublish/disconnect: stop the aiortc track (a
                                    # fresh _rtc_track with a new id replaces it)
    local_track._publish_info() -> dict
                                    # for the AddTrackRequest, after _configure():
                                    # audio {"stereo", "dtx", "bitrate"};
                                    # video {"width", "height", "max_bitrate", "max_framerate"}

Remote tracks::

    RemoteAudioTrack._from_rtc(rtc_track, *, sid, name, receiver=None) -> RemoteAudioTrack
    RemoteVideoTrack._from_rtc(rtc_track, *, sid, name, receiver=None) -> RemoteVideoTrack
                                    # must be called with a running loop; starts ONE pump
                                    # task that always drains aiortc's (unbounded) queue and
                                    # fans frames out to bounded per-stream queues
    remote_track._set_muted(muted: bool) -> None
    remote_track._set_room(room) -> None    # the Room it was received in (weak reference);
                                    # AudioStream frame processors get room context from it
    remote_track._set_stream_state(state: StreamState) -> None
    remote_track._add_encoded_stream(stream) / _remove_encoded_stream(stream)
                                    # media.encoded_receive.EncodedFrameStream: its
                                    # ``_end()`` is called when the track ends
    await remote_track._close() -> None   # stop the pump, end every stream of this track

``get_stats()`` returns the aiortc stats objects (``RTCOutboundRtpStreamStats``,
``RTCRemoteInboundRtpStreamStats``, ``RTCInboundRtpStreamStats``, ``RTCTransportStats``...,
each with ``.type``) of the attached sender/receiver; ``[]`` when there is none.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, Union

from ._tasks import cancel_and_wait
from .types import StreamState, TrackKind, TrackPublishOptions

if TYPE_CHECKING:
    from .media.audio_source import AudioSource
    from .media.encoded_video import EncodedVideoSource
    from .media.video_source import VideoSource

__all__ = [
    "AudioTrack",
    "LocalAudioTrack",
    "LocalTrack",
    "LocalVideoTrack",
    "PublishableTrack",
    "RemoteAudioTrack",
    "RemoteTrack",
    "RemoteVideoTrack",
    "Track",
    "VideoTrack",
]

logger = logging.getLogger(__name__)


class _StreamSink(Protocol):
    def _push(self, item: Any) -> None: ...

    def _end(self) -> None: ...


class _Endable(Protocol):
    def _end(self) -> None: ...


class PublishableTrack(Protocol):
    """What publishing needs of a local track (``LocalAudioTrack`` / ``LocalVideoTrack``)."""

    _rtc_track: Any  # the aiortc MediaStreamTrack added to the publisher PC
    _on_mute_changed: Callable[[bool], None] | None

    @property
    def kind(self) -> TrackKind: ...

    @property
    def name(self) -> str: ...

    @property
    def muted(self) -> bool: ...

    def mute(self) -> None: ...

    def unmute(self) -> None: ...

    def _dimensions(self) -> tuple[int, int]: ...

    def _num_channels(self) -> int: ...

    def _configure(self, options: TrackPublishOptions) -> None: ...

    def _attach_sender(self, sender: Any) -> None: ...

    def _set_sid(self, sid: str) -> None: ...

    def _close(self) -> None: ...


class Track:
    """Base of all tracks; not constructed by users."""

    _KIND = TrackKind.KIND_UNKNOWN

    def __init__(self, name: str, sid: str = "") -> None:
        self._name = name
        self._sid = sid
        self._muted = False
        self._stream_state = StreamState.STATE_ACTIVE
        self._sender: Any = None
        self._receiver: Any = None

    @property
    def sid(self) -> str:
        return self._sid

    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> TrackKind:
        return self._KIND

    @property
    def stream_state(self) -> StreamState:
        return self._stream_state

    @property
    def muted(self) -> bool:
        return self._muted

    def _set_sid(self, sid: str) -> None:
        self._sid = sid

    def _close(self) -> Awaitable[None] | None:
        """Release what the track holds (unpublish, unsubscribe, disconnect)."""
        return None

    def _set_stream_state(self, state: StreamState) -> None:
        self._stream_state = StreamState(state)

    async def get_stats(self) -> list[Any]:
        """RTP statistics of this track's sender or receiver (aiortc stats objects)."""
        out: list[Any] = []
        for end in (self._sender, self._receiver):
            if end is None:
                continue
            report = await asyncio.wait_for(end.getStats(), timeout=5.0)
            out.extend(report.values())
        return out

    def __repr__(self) -> str:
        return f"rtc.{type(self).__name__}(sid={self._sid}, name={self._name})"


# --------------------------------------------------------------------------- local


class _LocalTrackMixin(Track):
    _rtc_track: Any

    def _init_local(self) -> None:
        self._on_mute_changed: Callable[[bool], None] | None = None

    def _attach_sender(self, sender: Any) -> None:
        """Attach the RTCRtpSender after addTransceiver; ``None`` detaches (unpublish)."""
        self._sender = sender
        self._rtc_track.attach_sender(sender)

    def _set_muted_local(self, muted: bool) -> None:
        if self._muted == muted:
            return
        self._muted = muted
        self._rtc_track.muted = muted
        if muted is False and self._KIND == TrackKind.KIND_VIDEO:
            self._rtc_track.force_keyframe = True
        cb = self._on_mute_changed
        if cb is not None:
            cb(muted)

    def mute(self) -> None:
        """Stop sending media and tell the server the track is muted."""
        self._set_muted_local(True)

    def unmute(self) -> None:
        self._set_muted_local(False)

    def _new_rtc_track(self) -> Any:
        raise NotImplementedError

    def _dimensions(self) -> tuple[int, int]:
        """``(width, height)`` of a video source (``(0, 0)`` if unknown or audio)."""
        return 0, 0

    def _num_channels(self) -> int:
        """Channels of an audio source (1 if unknown or video)."""
        return 1

    def _configure(self, options: TrackPublishOptions) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """Stop the aiortc track; a fresh one (new ``id``) allows publishing again."""
        old = self._rtc_track
        old.stop()
        self._sender = None
        fresh = self._new_rtc_track()
        fresh.configure(old.config)
        fresh.muted = old.muted
        self._rtc_track = fresh


class LocalAudioTrack(_LocalTrackMixin):
    """An audio track fed by an :class:`AudioSource` (Opus, mono unless the source is stereo)."""

    _KIND = TrackKind.KIND_AUDIO

    def __init__(self, name: str, source: AudioSource) -> None:
        super().__init__(name)
        self._init_local()
        self._source = source
        self._rtc_track = self._new_rtc_track()

    def _new_rtc_track(self) -> Any:
        from .media.rtc_local import LocalAudioRtcTrack

        return LocalAudioRtcTrack(self._source)

    @staticmethod
    def create_audio_track(name: str, source: AudioSource) -> LocalAudioTrack:
        from .media.audio_source import AudioSource

        if not isinstance(source, AudioSource):
            raise TypeError("source must be an AudioSource")
        return LocalAudioTrack(name, source)

    def _num_channels(self) -> int:
        n = self._source.num_channels
        return n if isinstance(n, int) and n > 0 else 1

    def _configure(self, options: TrackPublishOptions) -> None:
        from .media import codecs

        self._rtc_track.configure(codecs.audio_config(options, self._source.num_channels))

    def _publish_info(self) -> dict[str, Any]:
        cfg = self._rtc_track.config
        return {"stereo": cfg.channels == 2, "dtx": cfg.dtx, "bitrate": cfg.bitrate}


class LocalVideoTrack(_LocalTrackMixin):
    """A video track fed by a :class:`VideoSource` (VP8 or H264, as negotiated) or by an
    :class:`EncodedVideoSource` (the application's VP8 / H264 frames, sent as they are)."""

    _KIND = TrackKind.KIND_VIDEO

    def __init__(self, name: str, source: VideoSource | EncodedVideoSource) -> None:
        super().__init__(name)
        self._init_local()
        self._source = source
        self._rtc_track = self._new_rtc_track()

    def _new_rtc_track(self) -> Any:
        from .media.encoded_track import EncodedVideoRtcTrack
        from .media.encoded_video import EncodedVideoSource
        from .media.rtc_local import LocalVideoRtcTrack

        if isinstance(self._source, EncodedVideoSource):  # pre-encoded frames, sent as are
            return EncodedVideoRtcTrack(self._source)
        return LocalVideoRtcTrack(self._source)

    @staticmethod
    def create_video_track(name: str, source: VideoSource | EncodedVideoSource
                           ) -> LocalVideoTrack:
        from .media.encoded_video import EncodedVideoSource
        from .media.video_source import VideoSource

        if not isinstance(source, (VideoSource, EncodedVideoSource)):
            raise TypeError("source must be a VideoSource or an EncodedVideoSource")
        return LocalVideoTrack(name, source)

    def _dimensions(self) -> tuple[int, int]:
        w, h = self._source.width, self._source.height
        if isinstance(w, int) and isinstance(h, int) and w and h:
            return w, h
        return 0, 0

    def _configure(self, options: TrackPublishOptions) -> None:
        from .media import codecs

        self._rtc_track.configure(codecs.video_config(options))

    def _publish_info(self) -> dict[str, Any]:
        from .media import codecs

        cfg = self._rtc_track.config
        w, h = self._source.width, self._source.height
        fps = cfg.max_framerate or 30.0
        return {
            "width": w,
            "height": h,
            "max_bitrate": cfg.max_bitrate or codecs.default_video_bitrate(w, h, fps),
            "max_framerate": fps,
        }


# --------------------------------------------------------------------------- remote


class _RemoteTrackBase(Track):
    def __init__(self, name: str, sid: str) -> None:
        super().__init__(name, sid)
        self._rtc_track: Any = None
        self._streams: list[_StreamSink] = []
        self._pump_task: asyncio.Task[None] | None = None
        self._ended = False
        self._room_ref: weakref.ref[Any] | None = None
        self._encoded_streams: list[_Endable] = []  # media.encoded_receive streams
        self.frames_received = 0

    def _start(self, rtc_track: Any, receiver: Any) -> None:
        self._rtc_track = rtc_track
        self._receiver = receiver
        self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    def _set_muted(self, muted: bool) -> None:
        self._muted = bool(muted)

    def _set_room(self, room: Any) -> None:
        self._room_ref = weakref.ref(room) if room is not None else None

    def _room(self) -> Any:
        return self._room_ref() if self._room_ref is not None else None

    def _add_stream(self, stream: _StreamSink) -> None:
        if self._ended:
            stream._end()
        elif stream not in self._streams:
            self._streams.append(stream)

    def _remove_stream(self, stream: _StreamSink) -> None:
        if stream in self._streams:
            self._streams.remove(stream)

    def _add_encoded_stream(self, stream: _Endable) -> None:
        """An ``EncodedFrameStream`` of this track: ended with the track."""
        if self._ended:
            stream._end()
        elif stream not in self._encoded_streams:
            self._encoded_streams.append(stream)

    def _remove_encoded_stream(self, stream: _Endable) -> None:
        if stream in self._encoded_streams:
            self._encoded_streams.remove(stream)

    def _convert(self, frame: Any) -> Any:
        raise NotImplementedError

    async def _pump(self) -> None:
        from aiortc.mediastreams import MediaStreamError

        recv = self._rtc_track.recv
        try:
            while True:
                frame = await recv()
                self.frames_received += 1
                if not self._streams:
                    continue  # nobody listens: drop, but keep draining aiortc's queue
                try:
                    item = self._convert(frame)
                except Exception:
                    logger.exception("remote track %s: bad frame dropped", self._sid)
                    continue
                self._fan_out(item)
        except MediaStreamError:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("remote track %s: receive loop failed", self._sid)
        finally:
            self._end_streams()

    def _fan_out(self, item: Any) -> None:
        for stream in tuple(self._streams):
            try:
                stream._push(item)
            except Exception:
                logger.exception("remote track %s: stream failed; detached", self._sid)
                self._remove_stream(stream)
                stream._end()

    def _end_streams(self) -> None:
        self._ended = True
        streams, self._streams = self._streams, []
        encoded, self._encoded_streams = self._encoded_streams, []
        for stream in (*streams, *encoded):
            stream._end()

    async def _close(self) -> None:
        task, self._pump_task = self._pump_task, None
        if task is not None and not task.done():
            await cancel_and_wait(task)
        self._end_streams()


class RemoteAudioTrack(_RemoteTrackBase):
    """An audio track received from another participant; read it with ``AudioStream``."""

    _KIND = TrackKind.KIND_AUDIO

    @classmethod
    def _from_rtc(
        cls, rtc_track: Any, *, sid: str, name: str, receiver: Any = None
    ) -> RemoteAudioTrack:
        track = cls(name, sid)
        track._start(rtc_track, receiver)
        if receiver is not None:  # decode only while an AudioStream reads the track
            from .media.jitter import attach_listener

            attach_listener(receiver, track)
        return track

    def _deliver_audio(self, frame: Any) -> None:
        """A decoded frame from the receiver's playout buffer (``media.jitter``)."""
        if self._ended:
            return
        self.frames_received += 1
        self._fan_out(frame)

    async def get_stats(self) -> list[Any]:
        """As :meth:`Track.get_stats`; the ``inbound-rtp`` entry also carries the playout
        buffer's WebRTC members (``jitterBufferDelay``, ``concealedSamples``,
        ``insertedSamplesForDeceleration``...) when the receiver has one."""
        out = await super().get_stats()
        if self._receiver is None:
            return out
        from .media.jitter import playout_stats

        extra = playout_stats(self._receiver)
        if extra:
            for st in out:
                if getattr(st, "type", "") == "inbound-rtp":
                    for name, value in extra.items():
                        setattr(st, name, value)
        return out

    def _convert(self, frame: Any) -> Any:
        from .media.audio_frame import AudioFrame

        channels = len(frame.layout.channels)
        samples = frame.samples
        if frame.format.name != "s16":  # aiortc's decoders give s16; be safe with others
            import av

            frames = av.AudioResampler(format="s16", layout=frame.layout).resample(frame)
            data = b"".join(bytes(f.planes[0])[: f.samples * channels * 2] for f in frames)
            samples = len(data) // (2 * channels)
            return AudioFrame(data, frame.sample_rate, channels, samples)
        data = bytes(frame.planes[0])[: samples * channels * 2]
        return AudioFrame(data, frame.sample_rate, channels, samples)


class RemoteVideoTrack(_RemoteTrackBase):
    """A video track received from another participant; read it with ``VideoStream``."""

    _KIND = TrackKind.KIND_VIDEO

    @classmethod
    def _from_rtc(
        cls, rtc_track: Any, *, sid: str, name: str, receiver: Any = None
    ) -> RemoteVideoTrack:
        track = cls(name, sid)
        track._start(rtc_track, receiver)
        return track

    def _convert(self, frame: Any) -> Any:
        from .media.video_stream import av_to_event

        return av_to_event(frame)


LocalTrack = Union[LocalAudioTrack, LocalVideoTrack]  # noqa: UP007 - typing Unions, as in livekit.rtc
RemoteTrack = Union[RemoteAudioTrack, RemoteVideoTrack]  # noqa: UP007 - typing Unions, as in livekit.rtc
AudioTrack = Union[LocalAudioTrack, RemoteAudioTrack]  # noqa: UP007 - typing Unions, as in livekit.rtc
VideoTrack = Union[LocalVideoTrack, RemoteVideoTrack]  # noqa: UP007 - typing Unions, as in livekit.rtc
