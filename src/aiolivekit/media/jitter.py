"""Jitter buffers installed on received audio (aiortc's ``JitterBuffer.add`` hook).

:class:`PlayoutJitterBuffer` (the default): every RTP packet of the receiver goes into an
:class:`~aiolivekit.media.playout.AudioPlayoutBuffer` (adaptive delay, reordering, Opus
FEC/PLC, RED, DTX as silence; ``docs/audio-playout.md``), decoded by libopus directly
(:mod:`.opus_decoder`). aiortc's decoder thread gets nothing: frames are pulled from the
buffer on the event loop's clock (when a packet arrives and at ``next_due()``, one timer
handle) and handed to the listening :class:`~aiolivekit.track.RemoteAudioTrack` as 20 ms
:class:`~aiolivekit.media.audio_frame.AudioFrame` s on a steady grid. On a clean network the buffer's target
delay is ~0: a packet leaves the moment it arrives.

:class:`AudioJitterBuffer` (today's low-latency path, kept where libopus' decoder cannot be
loaded, or with ``AIOLIVEKIT_AUDIO_PLAYOUT=0``; a warning says so): each packet is handed
to aiortc's decoder as soon as it arrives, in sequence order; an older or duplicate one is
dropped and a gap is left to the decoder. aiortc cannot decode RED: a RED packet's
primary block is decoded here (PyAV's libopus, as aiortc does) and handed to the track.

Either way a packet of a track nobody reads (no ``AudioStream``) is not decoded at all:
the buffer knows its track (``listener``) and takes packets only while the track has a
stream. A bot in a room of many speakers then decodes only what it listens to.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

from aiortc.jitterbuffer import JitterFrame

from .._compat import aiortc as aiortc_compat, aiortc_nack
from .encoded_receive import own_jitter_buffer
from .nack import AudioNackScheduler
from .playout import AudioPlayoutBuffer, PlayoutFrame

__all__ = [
    "AudioJitterBuffer",
    "PlayoutJitterBuffer",
    "attach_listener",
    "install_audio_jitter_buffer",
    "playout_stats",
]

logger = logging.getLogger(__name__)

# a jump this far ahead (or behind) is a new stream: restart from it
_RESYNC = 3000


class AudioJitterBuffer:
    """Drop-in for aiortc's ``JitterBuffer.add`` for single-packet audio frames."""

    capacity = 16

    def __init__(self, receiver: Any = None) -> None:
        self._last: int | None = None
        self._receiver = receiver
        self._red_decoder: Any = None
        self.released = 0
        self.dropped = 0
        self.unheard = 0  # packets not decoded: nobody reads the track
        self.listener: Any = None  # the RemoteAudioTrack (its ``_streams``), once known
        # end-to-end encryption: payload -> decrypted payload, or None to drop it
        self.decryptor: Callable[[bytes], bytes | None] | None = None

    def _is_red(self, pt: int) -> bool:
        codec = aiortc_compat.receiver_codecs(self._receiver).get(pt)
        return str(getattr(codec, "mimeType", "")).lower() == "audio/red"

    def _decode_red(self, packet: Any, listener: Any) -> None:
        """aiortc has no RED decoder: decode the primary block here (PyAV's libopus, as
        aiortc's own Opus decoder) and hand the frames to the track directly."""
        from aiortc.codecs.opus import OpusDecoder as AiortcOpusDecoder

        from .red import parse_red

        payload: bytes | None = aiortc_compat.depayloaded(packet)
        if self.decryptor is not None and payload:
            payload = self.decryptor(payload)
        if payload is None:
            self.dropped += 1
            return
        try:
            primary = parse_red(payload).primary
        except ValueError:
            self.dropped += 1
            return
        if not primary or listener is None:
            return
        if self._red_decoder is None:
            self._red_decoder = AiortcOpusDecoder()
        try:
            frames = self._red_decoder.decode(JitterFrame(data=primary,
                                                          timestamp=packet.timestamp))
        except Exception:  # a malformed packet: PyAV raises its own errors
            logger.debug("undecodable RED primary dropped", exc_info=True)
            self.dropped += 1
            return
        for frame in frames:
            listener._deliver_audio(listener._convert(frame))

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
        if self._receiver is not None and self._is_red(int(packet.payload_type)):
            self._decode_red(packet, listener)
            return False, None
        data: bytes | None = aiortc_compat.depayloaded(packet)
        if self.decryptor is not None and data:
            data = self.decryptor(data)
        if data is None:
            self.dropped += 1
            return False, None
        return False, JitterFrame(data=data, timestamp=packet.timestamp)

    def remove(self, count: int) -> None:  # aiortc API; nothing is held
        pass

    def smart_remove(self, count: int) -> bool:  # aiortc API; nothing is held
        return False


def attach_listener(receiver: Any, track: Any) -> bool:
    """Decode ``receiver``'s packets only while ``track`` has streams; ``False`` if the
    receiver has none of our buffers (then aiortc decodes everything)."""
    buffer = own_jitter_buffer(receiver)
    if not isinstance(buffer, (AudioJitterBuffer, PlayoutJitterBuffer)):
        return False
    buffer.listener = track
    return True


class PlayoutJitterBuffer:
    """aiortc's ``JitterBuffer`` replaced by an adaptive playout buffer (module doc).

    ``add`` is called by aiortc's receiver on the event loop for every RTP packet of the
    receiver's negotiated codecs; it returns ``(False, None)``: aiortc decodes nothing.
    Frames go to ``listener._deliver_audio(frame)``.
    """

    capacity = 16
    #: no packet for this long: stop pulling (the buffer has turned to silence by then)
    IDLE = 1.0

    def __init__(self, receiver: Any = None, *, channels: int = 2, **options: Any) -> None:
        from .opus_decoder import OpusDecoder

        self._receiver = receiver
        # AudioPlayoutBuffer's keyword arguments; 20 ms frames by default: a packet (20 ms
        # from every SDK) leaves whole the moment it is due, as the pass-through path did
        # (10 ms frames would hold the second half of each packet 10 ms longer)
        options.setdefault("frame_ms", 20)
        self._options = options
        self.buffer = AudioPlayoutBuffer(OpusDecoder(48000, channels), **options)
        self.listener: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._last_insert = 0.0
        self._pts: dict[int, str] = {}  # payload type -> "opus" | "red" | "other"
        self._opus_pt: int | None = None
        self._nack_pts: set[int] = set()  # payload types negotiated with ``nack`` feedback
        # AIOLIVEKIT_AUDIO_NACK=0: never request retransmissions (the SDP may still accept
        # ``nack``: it allows NACKs, it does not oblige us to send any)
        self._nack_enabled = os.environ.get("AIOLIVEKIT_AUDIO_NACK", "1") != "0"
        # audio NACK (RFC 4585) when negotiated: which missing packets to request
        self.nack: AudioNackScheduler | None = None
        self.nack_recovered = 0  # requested, arrived in time and taken by the buffer
        self.nack_late = 0  # requested, arrived after its slot was played
        self._nack_tasks: set[asyncio.Future[None]] = set()
        self._ssrc: int | None = None
        self.frames = 0  # frames delivered
        self.unheard = 0  # packets not taken: nobody reads the track
        self.dropped = 0  # packets of another codec, empty or malformed (or undecryptable)
        self.closed = False
        # end-to-end encryption: payload -> decrypted payload, or None to drop it
        self.decryptor: Callable[[bytes], bytes | None] | None = None

    # ------------------------------------------------------------ packet side

    def _kind(self, pt: int) -> str:
        kind = self._pts.get(pt)
        if kind is None:
            codecs = aiortc_compat.receiver_codecs(self._receiver)
            for cpt, codec in codecs.items():
                name = str(getattr(codec, "mimeType", "")).lower()
                if aiortc_nack.codec_has_nack(codec):
                    self._nack_pts.add(cpt)
                if name == "audio/opus":
                    self._opus_pt = cpt
                    self._pts[cpt] = "opus"
                elif name == "audio/red":
                    self._pts[cpt] = "red"
            if not codecs and pt not in self._pts:
                self._pts[pt] = "opus"  # no codec table to read: aiortc only hands us Opus
                self._opus_pt = pt
            kind = self._pts.setdefault(pt, "other")
        return kind

    def add(self, packet: Any) -> tuple[bool, Any]:
        """Take one RTP packet; returns ``(False, None)`` (aiortc's decoder is not used)."""
        listener = self.listener
        if self.closed or listener is None or not listener._streams:
            self.unheard += 1
            self._idle()
            return False, None
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        payload = aiortc_compat.depayloaded(packet)
        pt = int(packet.payload_type)
        kind = self._kind(pt)
        nacking = self._nack_enabled and kind != "other" and pt in self._nack_pts
        requested = nacking and self._nack_received(packet, now)
        taken = 0
        if self.decryptor is not None and payload and kind != "other":
            decrypted = self.decryptor(payload)
            if decrypted is None:
                self.dropped += 1
                self._run(now)
                return False, None
            payload = decrypted
        try:
            if not payload or kind == "other":
                self.dropped += 1
            elif kind == "red":
                # every block is Opus (the only codec negotiated under RED); its payload
                # type is the publisher's, which an SFU does not rewrite
                taken = self.buffer.insert_red(packet.sequence_number, packet.timestamp,
                                               payload, now, payload_type=None)
                self._last_insert = now
            elif kind == "opus":
                taken = self.buffer.insert(packet.sequence_number, packet.timestamp,
                                           payload, now, requested=requested)
                self._last_insert = now
            else:
                self.dropped += 1
        except ValueError:
            logger.debug("malformed audio packet %d dropped", packet.sequence_number,
                         exc_info=True)
            self.dropped += 1
        if requested:
            if taken:
                self.nack_recovered += 1
            else:
                self.nack_late += 1
        self._run(now)
        return False, None

    def _nack_received(self, packet: Any, now: float) -> bool:
        """Tell the NACK scheduler; True when the packet was requested (a retransmission,
        or an original that was only late)."""
        nack = self.nack
        if nack is None:
            nack = self.nack = AudioNackScheduler()
        ssrc = int(packet.ssrc)
        if ssrc != self._ssrc:
            if self._ssrc is not None:
                nack.reset()
            self._ssrc = ssrc
        gaps = nack.stats.gaps
        requested = nack.received(int(packet.sequence_number), now)
        if nack.stats.gaps != gaps:
            self.buffer.note_loss(now)
        return requested

    def _send_nacks(self, now: float) -> None:
        nack, ssrc = self.nack, self._ssrc
        if nack is None or ssrc is None or self._receiver is None:
            return
        lost = nack.poll(now, self.buffer.deadline)
        if not lost:
            return
        try:
            task = asyncio.ensure_future(aiortc_nack.send_nack(self._receiver, ssrc, lost))
        except AttributeError:  # aiortc moved: reported once by the compat checks
            logger.debug("audio NACK could not be sent", exc_info=True)
            self.nack = None
            return
        self._nack_tasks.add(task)
        task.add_done_callback(self._nack_sent)

    def _nack_sent(self, task: asyncio.Future[None]) -> None:
        self._nack_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.debug("sending an audio NACK failed: %r", task.exception())

    def remove(self, count: int) -> None:  # aiortc API; nothing is held for aiortc
        pass

    def smart_remove(self, count: int) -> bool:  # aiortc API
        return False

    # ------------------------------------------------------------ frame side

    def _run(self, now: float) -> None:
        """Deliver every frame due at ``now``, then arm the timer for the next one."""
        if self.nack is not None:
            self._send_nacks(now)
        buffer = self.buffer
        listener = self.listener
        while True:
            frame = buffer.pull(now)
            if frame is None:
                break
            self._deliver(listener, frame)
            if self.closed:
                return
        if self.nack is not None:
            awaited = buffer.take_awaited()
            if awaited is not None:  # NACK it now: it may come back before the next one
                self.nack.overdue(awaited, now)
                self._send_nacks(now)
        due = buffer.next_due()
        if due is None or now - self._last_insert > self.IDLE:
            self._cancel_timer()
            return
        if self._timer is not None and self._timer_at == due:
            return
        self._cancel_timer()
        assert self._loop is not None
        self._timer_at = due
        self._timer = self._loop.call_at(due, self._on_timer)

    def _deliver(self, listener: Any, frame: PlayoutFrame) -> None:
        from .audio_frame import AudioFrame

        self.frames += 1
        out = AudioFrame(frame.data, frame.sample_rate, frame.num_channels,
                         frame.samples_per_channel)
        try:
            listener._deliver_audio(out)
        except Exception:
            logger.exception("delivering received audio failed")

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        listener = self.listener
        if (self.closed or listener is None or not listener._streams
                or getattr(listener, "_ended", False)):
            self._idle()
            return
        assert self._loop is not None
        self._run(self._loop.time())

    def _cancel_timer(self) -> None:
        timer, self._timer, self._timer_at = self._timer, None, None
        if timer is not None:
            timer.cancel()

    def _idle(self) -> None:
        """Nobody listens: stop the timer and forget the stream (a listener that comes
        back starts from the next packet, not from audio queued meanwhile)."""
        self._cancel_timer()
        if self.nack is not None:
            self.nack.reset()
        if self.buffer.playing or self.buffer.next_due() is not None:
            old = self.buffer
            self.buffer = AudioPlayoutBuffer(old.decoder, **self._options)
            self.buffer.stats = old.stats
            old.decoder.reset()

    def close(self) -> None:
        """Stop the timer for good (the receiver got another buffer, or ended)."""
        self.closed = True
        self._cancel_timer()


def playout_stats(receiver: Any) -> dict[str, float | int] | None:
    """The playout buffer's WebRTC ``inbound-rtp`` members for ``receiver``, or None when
    it has no :class:`PlayoutJitterBuffer`."""
    buffer = own_jitter_buffer(receiver)
    if not isinstance(buffer, PlayoutJitterBuffer):
        return None
    stats = buffer.buffer.stats
    out = stats.webrtc()
    out.pop("jitter", None)  # aiortc's own inbound-rtp jitter (RFC 3550) stays
    out["fecPacketsRecovered"] = stats.fec_packets_recovered
    out["redPacketsRecovered"] = stats.red_packets_recovered
    out["redBlocksReceived"] = stats.red_blocks_received
    out["silentSamples"] = stats.silent_samples
    out["currentDelay"] = stats.current_delay
    out["targetDelay"] = stats.target_delay
    nack = buffer.nack
    out["nackCount"] = nack.stats.nack_requests if nack is not None else 0
    out["nackPacketsRequested"] = nack.stats.nacked_packets if nack is not None else 0
    out["nackPacketsRecovered"] = buffer.nack_recovered
    out["nackPacketsLate"] = buffer.nack_late
    return out


_fallback_reported = False


def _playout_enabled() -> bool:
    return os.environ.get("AIOLIVEKIT_AUDIO_PLAYOUT", "1") != "0"


def install_audio_jitter_buffer(receiver: Any) -> bool:
    """Replace an aiortc audio receiver's jitter buffer; ``False`` if aiortc lacks the hook
    (its own buffer is kept). The playout buffer when libopus' decoder loads, else (or
    with ``AIOLIVEKIT_AUDIO_PLAYOUT=0``) the low-latency pass-through, reported once."""
    global _fallback_reported
    old = own_jitter_buffer(receiver)  # a tap of the receiver's previous track goes too
    buffer: Any
    if _playout_enabled():
        from .opus_decoder import OpusDecoderUnavailable

        try:
            buffer = PlayoutJitterBuffer(receiver)
        except OpusDecoderUnavailable as exc:
            if not _fallback_reported:
                _fallback_reported = True
                logger.warning("received audio has no playout buffer (no reordering, FEC, "
                               "RED or concealment): %s", exc)
            buffer = AudioJitterBuffer(receiver)
    else:
        if not _fallback_reported:
            _fallback_reported = True
            logger.warning("AIOLIVEKIT_AUDIO_PLAYOUT=0: received audio has no playout buffer")
        buffer = AudioJitterBuffer(receiver)
    if not aiortc_compat.replace_jitter_buffer(receiver, buffer):
        if isinstance(buffer, PlayoutJitterBuffer):
            buffer.close()
        return False
    if isinstance(old, PlayoutJitterBuffer):
        old.close()
    return True
