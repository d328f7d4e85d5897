"""aiortc internals a client's own RTP sending uses (the audio fast path and simulcast),
written for aiortc 1.16.0 (pinned in pyproject.toml): one sender's and its DTLS
transport's private attributes, read and updated here and nowhere else.
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc.rtcdtlstransport import State as DtlsState

__all__ = ["DirectSendHooks"]

logger = logging.getLogger(__name__)


class DirectSendHooks:
    """What :class:`~aiolivekit.media.rtp_direct.DirectRtpWriter` reads and updates on one
    ``RTCRtpSender`` and its ``RTCDtlsTransport``: the negotiated mid and header extension
    ids, the SSRC, the SRTP session, the nominated ICE pair, and the counters aiortc's RTCP
    sender reports and ``getStats()`` read (``__ntp_timestamp``, ``__rtp_timestamp``,
    ``__octet_count``, ``__packet_count``; ``__tx_bytes``, ``__tx_packets``).

    :meth:`create` returns ``None`` when any of them moved (the caller keeps aiortc's own
    sending path).
    """

    __slots__ = ("dtls", "extension_ids", "mid", "sender", "ssrc")

    def __init__(self, sender: Any, mid: str | None, extension_ids: Any, ssrc: int) -> None:
        self.sender = sender
        self.dtls = sender.transport
        self.mid = mid
        self.extension_ids = extension_ids
        self.ssrc = ssrc

    @classmethod
    def create(cls, sender: Any) -> DirectSendHooks | None:
        try:
            mid = sender._RTCRtpSender__mid
            ids = sender._RTCRtpSender__rtp_header_extensions_map._HeaderExtensionsMap__ids
            ssrc = int(sender._ssrc)
            dtls = sender.transport
            for name in ("_tx_srtp", "_state", "transport"):
                getattr(dtls, name)
            for name in ("ntp_timestamp", "rtp_timestamp", "octet_count", "packet_count"):
                getattr(sender, "_RTCRtpSender__" + name)
            for name in ("tx_bytes", "tx_packets"):
                getattr(dtls, "_RTCDtlsTransport__" + name)
        except AttributeError:
            logger.debug("aiortc internals differ; direct RTP disabled", exc_info=True)
            return None
        return cls(sender, mid, ids, ssrc)

    def connected(self) -> bool:
        """Whether the DTLS transport is connected."""
        return self.dtls._state is DtlsState.CONNECTED  # type: ignore[no-any-return]

    def ice_connection(self) -> Any:
        """The aioice ``Connection`` under the DTLS transport."""
        return self.dtls.transport._connection

    def protect(self, packet: bytes) -> bytes:
        """``packet`` protected with the transport's SRTP session."""
        return self.dtls._tx_srtp.protect(packet)  # type: ignore[no-any-return]

    def sent(self, ntp_time: int, rtp_timestamp: int, payload_size: int, size: int) -> None:
        """Account one RTP packet (``payload_size`` bytes of payload, ``size`` on the wire)
        sent outside aiortc's loop, as aiortc itself would."""
        sender = self.sender
        sender._RTCRtpSender__ntp_timestamp = ntp_time
        sender._RTCRtpSender__rtp_timestamp = rtp_timestamp
        sender._RTCRtpSender__octet_count += payload_size
        sender._RTCRtpSender__packet_count += 1
        self.sent_on_transport(size)

    def sent_on_transport(self, size: int) -> None:
        """Account one packet of ``size`` bytes on the transport only (a stream whose
        SSRC aiortc does not know: a simulcast layer)."""
        dtls = self.dtls
        dtls._RTCDtlsTransport__tx_bytes += size
        dtls._RTCDtlsTransport__tx_packets += 1

    def can_route_rtcp(self) -> bool:
        """Whether :meth:`route_rtcp` finds the transport's RTP router table."""
        router = getattr(self.dtls, "_rtp_router", None)
        return isinstance(getattr(router, "senders", None), dict)

    def route_rtcp(self, ssrc: int, handler: Any) -> None:
        """Route the RTCP about ``ssrc`` (receiver reports, NACK, PLI) to ``handler``'s
        ``_handle_rtcp_packet`` coroutine: the transport's RTP router table, which
        aiortc fills with one entry per sender."""
        self.dtls._rtp_router.senders[ssrc] = handler

    def unroute_rtcp(self, ssrc: int, handler: Any) -> None:
        """Undo :meth:`route_rtcp` (if ``ssrc`` still routes to ``handler``)."""
        senders = self.dtls._rtp_router.senders
        if senders.get(ssrc) is handler:
            del senders[ssrc]
