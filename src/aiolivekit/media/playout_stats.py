"""The playout buffer's counters (:class:`PlayoutStats`), named after WebRTC's
``inbound-rtp`` statistics (``docs/audio-playout.md``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PlayoutStats"]


@dataclass
class PlayoutStats:
    """Counters and current values; names follow WebRTC's inbound-rtp stats (seconds)."""

    jitter: float = 0.0  # RFC 3550 interarrival jitter
    target_delay: float = 0.0
    current_delay: float = 0.0  # slot time minus the earliest expected arrival of its audio
    jitter_buffer_delay: float = 0.0  # sum over emitted packet samples of their wait
    jitter_buffer_target_delay: float = 0.0
    jitter_buffer_emitted_count: int = 0
    total_samples_received: int = 0  # every sample emitted, concealed or not
    concealed_samples: int = 0  # PLC and EXPAND
    silent_samples: int = 0  # DTX gaps and a stopped stream (not concealment)
    concealment_events: int = 0
    fec_samples: int = 0
    red_samples: int = 0
    inserted_samples_for_deceleration: int = 0
    removed_samples_for_acceleration: int = 0
    packets_received: int = 0
    packets_discarded: int = 0  # arrived after their slot was played
    packets_duplicated: int = 0
    packets_lost: int = 0  # declared lost (recovered or concealed)
    fec_packets_recovered: int = 0
    red_packets_recovered: int = 0
    red_blocks_received: int = 0
    decode_errors: int = 0
    buffer_flushes: int = 0
    stream_restarts: int = 0
    slot_resyncs: int = 0  # pull() called so late that the pace was restarted

    def webrtc(self) -> dict[str, float | int]:
        """The WebRTC ``inbound-rtp`` members these counters stand for (seconds, samples)."""
        return {
            "jitter": self.jitter,
            "jitterBufferDelay": self.jitter_buffer_delay,
            "jitterBufferTargetDelay": self.jitter_buffer_target_delay,
            "jitterBufferEmittedCount": self.jitter_buffer_emitted_count,
            "totalSamplesReceived": self.total_samples_received,
            "concealedSamples": self.concealed_samples,
            "concealmentEvents": self.concealment_events,
            "insertedSamplesForDeceleration": self.inserted_samples_for_deceleration,
            "removedSamplesForAcceleration": self.removed_samples_for_acceleration,
            "packetsDiscarded": self.packets_discarded,
        }
