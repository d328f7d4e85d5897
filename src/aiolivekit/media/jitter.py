"""A low-latency jitter buffer for received audio (sans-I/O).

aiortc's audio receiver holds four 20 ms frames before it decodes the oldest (about 80 ms
of added latency), and cannot release a frame before the next one has arrived. An Opus
RTP packet is a whole frame, so this buffer hands each packet to the decoder as soon as
it arrives, in sequence order: a packet newer than the last one released goes out at
once (a gap is left to the decoder's loss concealment), an older or duplicate one is
dropped. It keeps no packets, so it cannot grow.

A packet of a track nobody reads (no ``AudioStream``) is not decoded at all: the buffer
knows its :class:`~aiolivekit.track.RemoteAudioTrack` (``listener``) and releases packets
only while the track has a stream. A bot in a room of many speakers then decodes only
what it listens to.
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc.jitterbuffer import JitterFrame

from .._compat import aiortc as aiortc_compat

__all__ = ["AudioJitterBuffer", "attach_listener", "install_audio_jitter_buffer"]

logger = logging.getLogger(__name__)

# a jump this far ahead (or behind) is a new stream: restart from it
_RESYNC = 3000


class AudioJitterBuffer:
    """Drop-in for aiortc's ``JitterBuffer.add`` for single-packet audio frames."""

    capacity = 16

    def __init__(self) -> None:
        self._last: int | None = None
        self.released = 0
        self.dropped = 0
        self.unheard = 0  # packets not decoded: nobody reads the track
        self.listener: Any = None  # the RemoteAudioTrack (its ``_streams``), once known

    def add(self, packet: Any) -> tuple[bool, Any]:
        """Take one RTP packet; return ``(pli_flag, frame_or_None)`` like aiortc."""
        seq = int(packet.sequence_number)
        if self._last is not None:
            ahead = (seq - self._last) & 0xFFFF
            if ahead == 0 or (ahead >= 0x8000 and (0x10000 - ahead) < _RESYNC):
                self.dropped += 1
                return False, None
        self._last = seq
        listener = self.listener
        if listener is not None and not listener._streams:
            self.unheard += 1
            return False, None
        self.released += 1
        return False, JitterFrame(data=aiortc_compat.depayloaded(packet), timestamp=packet.timestamp)

    def remove(self, count: int) -> None:  # aiortc API; nothing is held
        pass

    def smart_remove(self, count: int) -> bool:  # aiortc API; nothing is held
        return False


def attach_listener(receiver: Any, track: Any) -> bool:
    """Decode ``receiver``'s packets only while ``track`` has streams; ``False`` if the
    receiver has no :class:`AudioJitterBuffer` (then everything is decoded)."""
    buffer = aiortc_compat.jitter_buffer(receiver)
    if not isinstance(buffer, AudioJitterBuffer):
        return False
    buffer.listener = track
    return True


def install_audio_jitter_buffer(receiver: Any) -> bool:
    """Replace an aiortc audio receiver's jitter buffer; ``False`` if aiortc lacks the hook
    (its own buffer is kept)."""
    return aiortc_compat.replace_jitter_buffer(receiver, AudioJitterBuffer())
