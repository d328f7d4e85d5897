"""What goes in and out of the playout buffer (:mod:`.playout`): the decoder it drives,
the frames it emits and what filled them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

__all__ = ["PlayoutDecoder", "PlayoutFrame", "PlayoutKind"]


class PlayoutKind(enum.Enum):
    """What filled (most of) a frame."""

    NORMAL = "normal"  # decoded from the packet itself
    RED = "red"  # decoded from a RED redundant copy of a lost packet
    FEC = "fec"  # in-band FEC of the next packet
    PLC = "plc"  # concealment of a packet declared lost
    EXPAND = "expand"  # concealment while waiting for a late packet (timeline held)
    SILENCE = "silence"  # DTX gap or no stream: digital silence
    INSERTED = "inserted"  # silence inserted before a quiet frame (deceleration)


class PlayoutDecoder(Protocol):
    """What the buffer needs of a decoder (PCM: interleaved int16 bytes)."""

    sample_rate: int
    channels: int

    def decode(self, payload: bytes) -> bytes: ...

    def decode_fec(self, payload: bytes, frame_size: int) -> bytes: ...

    def conceal(self, frame_size: int) -> bytes: ...

    def packet_samples(self, payload: bytes) -> int: ...

    def has_fec(self, payload: bytes) -> bool: ...

    def is_dtx(self, payload: bytes) -> bool: ...

    # optional: ``plc_first(payload) -> bool``, whether a loss after that packet is best
    # begun with the decoder's own concealment (default: yes)

    def reset(self) -> None: ...


@dataclass
class PlayoutFrame:
    """One frame out of the buffer."""

    data: bytes
    sample_rate: int
    num_channels: int
    samples_per_channel: int
    kind: PlayoutKind
    rtp_timestamp: int | None  # of the first sample, when it is from the stream's timeline
    due: float  # the slot time (caller's clock)
