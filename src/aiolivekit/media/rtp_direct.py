"""Direct RTP output for pre-encoded audio: one header write + SRTP + ``sendto`` per packet.

aiortc's ``RTCRtpSender._run_rtp`` costs a coroutine hop, an ``RtpPacket`` object, a header
extension map walk and a chain of awaits (``_send_rtp`` -> ICE -> protocol) for every
packet. :class:`DirectRtpWriter` writes the same packets for one sender synchronously:

* the header (with the negotiated ``mid``, ``abs-send-time`` and ``ssrc-audio-level``
  one-byte extensions, marker set as aiortc does) is serialised by the forwarder's
  :class:`~aiolivekit.webrtc.rtp.RtpHeaderWriter`;
* it is protected with the DTLS transport's SRTP session and written to the nominated
  ICE pair's datagram transport (a TURN pair goes through aioice's coroutine instead);
* the sender's RTCP counters (packets, octets, last RTP/NTP timestamp pair) and the
  transport's byte/packet counters are updated, so aiortc's own RTCP sender reports,
  ``getStats()`` and RTT estimation keep working unchanged.

The sender's ``_run_rtp`` task stays parked (see :mod:`.rtc_local`). Audio has no NACK in
aiortc's SDP, so no RTP history is kept. Relies on aiortc private attributes, all reached
through :class:`aiolivekit._compat.aiortc_direct.DirectSendHooks`; when they are missing
:meth:`DirectRtpWriter.create` returns None and aiortc's path is used.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from typing import Any

from aioice.ice import StunProtocol

from .._compat import aioice as aioice_compat
from .._compat.aiortc_direct import DirectSendHooks

# sans-I/O RTP header serialisation shared with the SFU's forwarder
from ..webrtc.rtp import RtpHeaderWriter, abs_send_time, ntp_time

__all__ = ["DirectRtpWriter", "enabled"]

logger = logging.getLogger(__name__)



def enabled() -> bool:
    """False when the environment variable ``AIOLIVEKIT_DIRECT_RTP=0`` is set."""
    return os.environ.get("AIOLIVEKIT_DIRECT_RTP", "1") != "0"


class DirectRtpWriter:
    """Sends one sender's RTP packets without going through ``RTCRtpSender._run_rtp``."""

    def __init__(self, hooks: DirectSendHooks, header: RtpHeaderWriter) -> None:
        self._hooks = hooks
        self._header = header
        self.ssrc: int = header.ssrc
        self.payload_type = header.payload_type
        self.sequence_number = random.getrandbits(16) % 32768  # as aiortc: no early wrap
        self.timestamp_origin = random.getrandbits(32)
        self.packets_sent = 0
        # counters of a stream whose SSRC is not the aiortc sender's (a simulcast layer's):
        # what its own sender reports carry
        self.octets_sent = 0
        self.last_ntp_time = 0
        self.last_rtp_timestamp = 0
        self._own_ssrc = header.ssrc != hooks.ssrc
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pair: Any = None
        self._pair_send: Any = None
        self._pair_addr: tuple[str, int] | None = None
        self._pair_async = False

    @classmethod
    def create(cls, sender: Any, codec: Any) -> DirectRtpWriter | None:
        """A writer for ``sender`` (its negotiated ``codec``), or None if unsupported."""
        if not enabled():
            return None
        hooks = DirectSendHooks.create(sender)
        if hooks is None:
            return None
        ids = hooks.extension_ids
        try:
            mid_id = int(ids.mid or 0)
            ast_id = int(ids.abs_send_time or 0)
            level_id = int(ids.audio_level or 0)
        except AttributeError:
            logger.debug("aiortc header extension ids differ; direct RTP disabled",
                         exc_info=True)
            return None
        try:
            header = RtpHeaderWriter(
                hooks.ssrc,
                int(codec.payloadType),
                mid=(hooks.mid or None) if mid_id else None,
                mid_id=mid_id or None,
                abs_send_time_id=ast_id or None,
                audio_level_id=level_id or None,
            )
        except ValueError:
            return None  # needs two-byte header extensions: leave it to aiortc
        return cls(hooks, header)

    @classmethod
    def create_layer(cls, hooks: DirectSendHooks, codec: Any, ssrc: int, rid: str,
                     rid_id: int) -> DirectRtpWriter | None:
        """A writer for one simulcast layer of a video sender (``hooks``): its ``ssrc``,
        its ``rid`` in the RID extension (``rid_id``) next to the mid and abs-send-time;
        None when the extension ids do not fit the one-byte form."""
        ids = hooks.extension_ids
        try:
            mid_id = int(ids.mid or 0)
            ast_id = int(ids.abs_send_time or 0)
            header = RtpHeaderWriter(ssrc, int(codec.payloadType),
                                     mid=(hooks.mid or None) if mid_id else None,
                                     mid_id=mid_id or None, abs_send_time_id=ast_id or None,
                                     rid=rid, rid_id=rid_id)
        except (AttributeError, ValueError):
            logger.debug("cannot write this layer's RTP header", exc_info=True)
            return None
        return cls(hooks, header)

    def _resolve_pair(self) -> bool:
        pair = aioice_compat.nominated_pair(self._hooks.ice_connection())
        if pair is None:
            return False
        self._pair = pair
        self._pair_addr = pair.remote_addr
        protocol = pair.protocol
        self._pair_async = type(protocol).send_data is not StunProtocol.send_data
        self._pair_send = protocol.send_data if self._pair_async else protocol.transport.sendto
        return True

    def send(self, payload: bytes, pts: int, audio_level: int | None) -> bool:
        """Send one packet; ``pts`` on the 48 kHz clock, ``audio_level`` 0..127 (-dBov).

        Returns False (packet dropped) when the transport is not connected.
        """
        seq = self.sequence_number
        ts = (self.timestamp_origin + pts) & 0xFFFFFFFF
        now = time.time()
        level = (False, 127 if audio_level is None else audio_level)
        # marker on every packet, as aiortc does
        packet = self._header.build_simple(1, seq, ts, payload, level, abs_send_time(now))
        if not self.send_packet(packet, now, ts, len(payload)):
            return False
        self.sequence_number = (seq + 1) & 0xFFFF
        return True

    def build(self, marker: int, ts: int, payload: bytes) -> bytes:
        """The next packet (no audio level) with the next sequence number, not sent."""
        seq = self.sequence_number
        self.sequence_number = (seq + 1) & 0xFFFF
        return self._header.build_simple(marker, seq, ts, payload, None,
                                         abs_send_time(time.time()))

    def send_packet(self, packet: bytes, now: float, ts: int, payload_size: int) -> bool:
        """Protect and send one serialised RTP packet and count it (``now``: wall clock,
        ``ts``: its RTP timestamp); False when it could not be sent."""
        hooks = self._hooks
        if not hooks.connected():
            return False
        if aioice_compat.nominated_pair(hooks.ice_connection()) is not self._pair:
            if not self._resolve_pair():
                return False
        data = hooks.protect(packet)
        try:
            if self._pair_async:
                if self._loop is None:
                    self._loop = asyncio.get_running_loop()
                self._loop.create_task(self._pair_send(data, self._pair_addr))
            else:
                self._pair_send(data, self._pair_addr)
        except (OSError, RuntimeError):
            logger.debug("RTP send failed", exc_info=True)
            return False
        self.packets_sent += 1
        if self._own_ssrc:
            self.octets_sent += payload_size
            self.last_ntp_time = ntp_time(now)
            self.last_rtp_timestamp = ts
            hooks.sent_on_transport(len(data))
        else:
            hooks.sent(ntp_time(now), ts, payload_size, len(data))
        return True
