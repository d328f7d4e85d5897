"""``AudioStream``: receive a remote audio track as ``AudioFrameEvent`` s.

Frames are remixed to ``num_channels`` and resampled to ``sample_rate``; with
``frame_size_ms`` they are re-cut into frames of exactly that length. The queue is
bounded and drops the oldest frame when full: ``capacity`` frames, or
``AudioStream.DEFAULT_CAPACITY`` (500 frames, about 10 s of 20 ms frames) when
``capacity`` is 0. Iteration ends after the buffered frames once the track ends,
and immediately after ``aclose()``.

``noise_cancellation`` takes a ``FrameProcessor`` (an object with ``enabled``,
``_process(frame)`` and ``_close()``, e.g. a ``livekit.rtc.FrameProcessor`` subclass):
each output frame goes through ``_process`` while ``enabled`` is true (a failing call
passes the frame through, with a warning), and ``aclose()`` calls ``_close()`` when
``auto_close_noise_cancellation`` is true. ``NoiseCancellationOptions`` (native filter
modules of the official SDK) raise ``UnsupportedOptionError``; any other object
``TypeError``. Unknown keyword arguments raise ``TypeError``. As in ``livekit.rtc``,
the processor's optional hooks learn the room context of the track it serves:
``_on_stream_info_updated(room_name=, participant_identity=, publication_sid=)`` and
``_on_credentials_updated(token=, url=)`` when the stream attaches to a track (again on
``token_refreshed``), ``_on_stream_info_cleared()`` / ``_on_credentials_cleared()``
when it leaves it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from ..options_check import audio_processor, check_stream_kwargs
from ..types import TrackKind, TrackSource
from .audio_frame import AudioFrame
from .audio_resampler import AudioResampler
from .stream_base import FrameStreamBase

__all__ = ["AudioFrameEvent", "AudioStream"]

logger = logging.getLogger(__name__)


@dataclass
class AudioFrameEvent:
    frame: AudioFrame


class AudioStream(FrameStreamBase[AudioFrameEvent]):
    """Async iterator of :class:`AudioFrameEvent` from a remote audio track."""

    DEFAULT_CAPACITY = 500
    _DEFAULT_BOUND = DEFAULT_CAPACITY
    _TRACK_KIND = TrackKind.KIND_AUDIO

    def __init__(
        self,
        track: Any,
        loop: asyncio.AbstractEventLoop | None = None,
        capacity: int = 0,
        sample_rate: int = 48000,
        num_channels: int = 1,
        frame_size_ms: int | None = None,
        noise_cancellation: Any = None,
        auto_close_noise_cancellation: bool = True,
        **kwargs: Any,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError("sample_rate must be > 0")
        if num_channels not in (1, 2):
            raise ValueError("num_channels must be 1 or 2")
        if frame_size_ms is not None and frame_size_ms <= 0:
            raise ValueError("frame_size_ms must be > 0")
        self._sample_rate = int(sample_rate)
        self._num_channels = int(num_channels)
        self._frame_samples = (
            self._sample_rate * int(frame_size_ms) // 1000 if frame_size_ms else 0
        )
        self._pending = bytearray()
        self._resampler: AudioResampler | None = None
        self._resampler_rate = 0
        check_stream_kwargs("AudioStream", kwargs)
        self._processor = audio_processor(noise_cancellation)
        self._processor_auto_close = bool(auto_close_noise_cancellation)
        self._bound_room: Any = None
        super().__init__(track, loop, capacity, kwargs)

    @classmethod
    def from_participant(
        cls,
        *,
        participant: Any,
        track_source: TrackSource,
        loop: asyncio.AbstractEventLoop | None = None,
        capacity: int = 0,
        sample_rate: int = 48000,
        num_channels: int = 1,
        frame_size_ms: int | None = None,
        noise_cancellation: Any = None,
        auto_close_noise_cancellation: bool = True,
    ) -> AudioStream:
        """Follow whichever audio track of ``track_source`` the participant publishes."""
        return cls(
            None,
            loop=loop,
            capacity=capacity,
            sample_rate=sample_rate,
            num_channels=num_channels,
            frame_size_ms=frame_size_ms,
            noise_cancellation=noise_cancellation,
            auto_close_noise_cancellation=auto_close_noise_cancellation,
            participant=participant,
            track_source=track_source,
        )

    @classmethod
    def from_track(
        cls,
        *,
        track: Any,
        loop: asyncio.AbstractEventLoop | None = None,
        capacity: int = 0,
        sample_rate: int = 48000,
        num_channels: int = 1,
        frame_size_ms: int | None = None,
        noise_cancellation: Any = None,
        auto_close_noise_cancellation: bool = False,
    ) -> AudioStream:
        """Stream ``track``; unlike the constructor, leaves the processor open by default
        (as ``livekit.rtc``), so it can serve another stream."""
        return cls(
            track,
            loop=loop,
            capacity=capacity,
            sample_rate=sample_rate,
            num_channels=num_channels,
            frame_size_ms=frame_size_ms,
            noise_cancellation=noise_cancellation,
            auto_close_noise_cancellation=auto_close_noise_cancellation,
        )

    # ------------------------------------------------------------ processor context

    def _attach(self, track: Any) -> None:
        super()._attach(track)
        if self._processor is not None and self._track is track:
            self._bind_processor(track)

    def _detach(self) -> None:
        self._unbind_processor()
        super()._detach()

    def _end(self) -> None:
        self._unbind_processor()
        super()._end()

    def _bind_processor(self, track: Any) -> None:
        room_of = getattr(track, "_room", None)
        room = room_of() if callable(room_of) else None
        if room is None:
            return
        identity = pub_sid = ""
        for participant in getattr(room, "remote_participants", {}).values():
            pub = participant.track_publications.get(getattr(track, "sid", ""))
            if pub is not None:
                identity, pub_sid = participant.identity, pub.sid
                break
        self._call_hook("_on_stream_info_updated", room_name=getattr(room, "name", ""),
                        participant_identity=identity, publication_sid=pub_sid)
        self._push_credentials(room)
        on = getattr(room, "on", None)
        if callable(on):
            on("token_refreshed", self._on_token_refreshed)
            self._bound_room = room

    def _unbind_processor(self) -> None:
        room, self._bound_room = getattr(self, "_bound_room", None), None
        if room is None:
            return
        room.off("token_refreshed", self._on_token_refreshed)
        self._call_hook("_on_stream_info_cleared")
        self._call_hook("_on_credentials_cleared")

    def _on_token_refreshed(self) -> None:
        room = getattr(self, "_bound_room", None)
        if room is not None:
            self._push_credentials(room)

    def _push_credentials(self, room: Any) -> None:
        token = getattr(room, "_token", None)
        url = getattr(getattr(room, "_engine", None), "url", None)
        if token and url:
            self._call_hook("_on_credentials_updated", token=token, url=url)

    def _call_hook(self, name: str, **kwargs: Any) -> None:
        hook = getattr(self._processor, name, None)
        if not callable(hook):
            return
        try:
            hook(**kwargs)
        except Exception:
            logger.warning("audio frame processor %s failed", name, exc_info=True)

    def _transform(self, frame: AudioFrame) -> list[AudioFrameEvent]:
        frames = [self._remix(frame)]
        if frames[0].sample_rate != self._sample_rate:
            if self._resampler is None or self._resampler_rate != frames[0].sample_rate:
                self._resampler_rate = frames[0].sample_rate
                self._resampler = AudioResampler(
                    self._resampler_rate, self._sample_rate, num_channels=self._num_channels
                )
            frames = self._resampler.push(frames[0])
        if self._frame_samples:
            frames = self._recut(frames)
        if self._processor is not None and self._processor.enabled:
            frames = [self._process(f) for f in frames]
        return [AudioFrameEvent(f) for f in frames]

    def _remix(self, frame: AudioFrame) -> AudioFrame:
        if frame.num_channels == self._num_channels:
            return frame
        import numpy as np

        x = np.frombuffer(frame.data, dtype=np.int16).reshape(-1, frame.num_channels)
        if self._num_channels == 1:
            y = (x.astype(np.int32).sum(axis=1) // frame.num_channels).astype(np.int16)
        else:
            y = np.repeat(x[:, :1], self._num_channels, axis=1)
        return AudioFrame(
            bytearray(y.tobytes()), frame.sample_rate, self._num_channels, frame.samples_per_channel
        )

    def _recut(self, frames: list[AudioFrame]) -> list[AudioFrame]:
        for f in frames:
            self._pending += f.data.cast("B")
        size = self._frame_samples * self._num_channels * 2
        out = []
        while len(self._pending) >= size:
            chunk = bytearray(self._pending[:size])
            del self._pending[:size]
            out.append(AudioFrame(chunk, self._sample_rate, self._num_channels, self._frame_samples))
        return out

    def _process(self, frame: AudioFrame) -> AudioFrame:
        try:
            out = self._processor._process(frame)  # type: ignore[union-attr]
            return out if isinstance(out, AudioFrame) else frame
        except Exception:
            logger.warning("audio frame processor failed; passing the frame through", exc_info=True)
            return frame

    async def aclose(self) -> None:
        """Stop receiving; iteration ends immediately. Closes the frame processor when
        ``auto_close_noise_cancellation`` is true."""
        await super().aclose()
        self._unbind_processor()
        processor, self._processor = self._processor, None
        if processor is not None and self._processor_auto_close:
            try:
                processor._close()
            except Exception:
                logger.warning("closing the audio frame processor failed", exc_info=True)
