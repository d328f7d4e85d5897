"""aiortc internals, written for aiortc 1.16.0 (pinned in pyproject.toml).

Each function names the private attribute it reads or writes so that an aiortc upgrade
is checked here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender, rtcrtpreceiver
from aiortc.rtcdtlstransport import State as DtlsState

from ..errors import AiortcCompatibilityError
from . import PINNED, installed_version

__all__ = ["dtls_srtp_session"]


def dtls_srtp_session(dtls: Any, tx: bool) -> Any | None:
    """The pylibsrtp ``Session`` an ``RTCDtlsTransport`` protects with (``tx``) or
    unprotects with; ``None`` before the DTLS handshake set the keys up
    (``RTCDtlsTransport._tx_srtp`` / ``._rx_srtp``)."""
    return getattr(dtls, "_tx_srtp" if tx else "_rx_srtp", None)


# --- client and base hooks ---
#
# Peer connection (``RTCPeerConnection.__connect``, ``__iceTransports``), ICE transport
# (``_connection``), DTLS transport (``_state``, ``_rtp_router``, ``__tx_bytes``,
# ``__tx_packets``), RTP sender (``__mid``, ``__rtp_header_extensions_map``, ``_ssrc``,
# the RTCP counters, ``_next_encoded_frame``, ``_send_keyframe``), RTP receiver
# (``__jitter_buffer``, ``_track``, its decoder thread, queue and error event), received
# ``RtpPacket._data`` and ``RTCSctpTransport._remote_max_message_size``.
#
# CLIENT_MISSING is the import-time check of the class-level hooks; the instance-level
# ones are checked where they are first used (each function says what it does then).

__all__ += [
    "CLIENT_MISSING",
    "DirectSendHooks",
    "depayloaded",
    "dtls_connected",
    "hook_sender",
    "ice_connection",
    "ice_connections",
    "jitter_buffer",
    "replace_jitter_buffer",
    "revive_receiver",
    "sctp_max_message_size",
    "start_transceivers",
]

logger = logging.getLogger(__name__)


def _client_hooks_missing() -> list[str]:
    missing = []
    if not callable(getattr(RTCPeerConnection, "_RTCPeerConnection__connect", None)):
        missing.append("RTCPeerConnection.__connect")
    for name in ("_next_encoded_frame", "_send_keyframe"):
        if not callable(getattr(RTCRtpSender, name, None)):
            missing.append("RTCRtpSender." + name)
    for name in ("decoder_worker", "RemoteStreamTrack"):
        if not hasattr(rtcrtpreceiver, name):
            missing.append("aiortc.rtcrtpreceiver." + name)
    if not hasattr(DtlsState, "CONNECTED"):
        missing.append("rtcdtlstransport.State.CONNECTED")
    return missing


# the import-time check (empty on the pinned aiortc); see each user for its fallback
CLIENT_MISSING: list[str] = _client_hooks_missing()
if CLIENT_MISSING:  # pragma: no cover - only with another aiortc
    logger.warning("aiortc %s is not the version aiolivekit was written for (%s): %s missing",
                 installed_version("aiortc"), PINNED["aiortc"], ", ".join(CLIENT_MISSING))


def _incompatible(what: str) -> AiortcCompatibilityError:
    return AiortcCompatibilityError(
        f"aiortc {installed_version('aiortc')} is not supported (aiolivekit was written for "
        f"{PINNED['aiortc']}): {what}")


# ------------------------------------------------------------------ peer connection


def start_transceivers(pc: Any) -> Awaitable[None] | None:
    """The coroutine of aiortc's (idempotent) connect step of ``pc``, which starts every
    transceiver whose DTLS transport is connected (``RTCPeerConnection.__connect``);
    ``None`` if it moved."""
    connect = getattr(pc, "_RTCPeerConnection__connect", None)
    return None if connect is None else connect()  # type: ignore[no-any-return]


def ice_connection(ice_transport: Any) -> Any | None:
    """The aioice ``Connection`` of an ``RTCIceTransport`` (``_connection``)."""
    return getattr(ice_transport, "_connection", None)


def ice_connections(pc: Any) -> list[Any]:
    """The aioice ``Connection`` of each of ``pc``'s ICE transports
    (``RTCPeerConnection.__iceTransports``; empty if it moved)."""
    transports: set[Any] = getattr(pc, "_RTCPeerConnection__iceTransports", set())
    conns = (ice_connection(transport) for transport in transports)
    return [conn for conn in conns if conn is not None]


def sctp_max_message_size(sctp: Any, default: int = 65536) -> int:
    """The largest message the remote SCTP end accepts (``_remote_max_message_size``)."""
    size = getattr(sctp, "_remote_max_message_size", default) if sctp is not None else default
    return int(size or default)


# ------------------------------------------------------------------ DTLS transport


def dtls_connected(dtls: Any) -> bool:
    """Whether an ``RTCDtlsTransport`` finished its handshake (``_state``)."""
    return dtls._state is DtlsState.CONNECTED  # type: ignore[no-any-return]


# ------------------------------------------------------------------ RTP sender


def hook_sender(
    sender: Any,
    next_frame: Callable[[Callable[[Any], Awaitable[Any]], Any], Awaitable[Any]],
    keyframe: Callable[[Callable[[], None]], None],
) -> None:
    """Wrap two methods of one ``RTCRtpSender`` instance: its RTP loop's
    ``_next_encoded_frame(codec)`` becomes ``next_frame(original, codec)`` and its PLI/FIR
    handler ``_send_keyframe()`` becomes ``keyframe(original)``. Raises
    :class:`AiortcCompatibilityError` if aiortc's sender lacks them."""
    orig_next = getattr(sender, "_next_encoded_frame", None)
    orig_keyframe = getattr(sender, "_send_keyframe", None)
    if orig_next is None or orig_keyframe is None:
        raise _incompatible("RTCRtpSender._next_encoded_frame / _send_keyframe moved")

    async def _next_encoded_frame(codec: Any) -> Any:
        return await next_frame(orig_next, codec)

    def _send_keyframe() -> None:
        keyframe(orig_keyframe)

    sender._next_encoded_frame = _next_encoded_frame
    sender._send_keyframe = _send_keyframe


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
        dtls = self.dtls
        dtls._RTCDtlsTransport__tx_bytes += size
        dtls._RTCDtlsTransport__tx_packets += 1


# ------------------------------------------------------------------ RTP receiver

_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"


def jitter_buffer(receiver: Any) -> Any | None:
    """The jitter buffer of an ``RTCRtpReceiver`` (``__jitter_buffer``)."""
    return getattr(receiver, _JITTER_ATTR, None)


def replace_jitter_buffer(receiver: Any, buffer: Any) -> bool:
    """Install ``buffer`` as ``receiver``'s jitter buffer; ``False`` (aiortc's kept) if
    the receiver has none where expected."""
    if not hasattr(receiver, _JITTER_ATTR):
        logger.debug("aiortc receiver has no %s; keeping its jitter buffer", _JITTER_ATTR)
        return False
    setattr(receiver, _JITTER_ATTR, buffer)
    return True


def depayloaded(packet: Any) -> bytes:
    """The depayloaded data aiortc's receiver attached to an ``RtpPacket`` (``_data``)."""
    return packet._data  # type: ignore[no-any-return]


def revive_receiver(receiver: Any, ssrcs: list[int]) -> Any | None:
    """Make a recycled receiver deliver a new remote stream; returns its live track.

    aiortc registers a receiver's SSRCs once and ends its track (stopping the decoder
    thread) on RTCP BYE; a transceiver the server reuses for another stream then delivers
    nothing. This routes the new SSRCs to the receiver (the DTLS transport's
    ``_rtp_router``) and, if its track ended, gives it a fresh ``RemoteStreamTrack``
    (``_track``) and decoder thread (``__decoder_thread``, fed from ``__decoder_queue``).
    Raises :class:`AiortcCompatibilityError` if those moved.
    """
    router = getattr(receiver.transport, "_rtp_router", None)
    if router is not None:
        for ssrc in ssrcs:
            router.ssrc_table[ssrc] = receiver
    track = receiver.track
    name = "_RTCRtpReceiver__decoder_thread"
    thread = getattr(receiver, name, None)
    if track is not None and track.readyState == "live" and thread is not None:
        return track
    if not getattr(receiver, "_RTCRtpReceiver__started", False):
        return track
    if "aiortc.rtcrtpreceiver.RemoteStreamTrack" in CLIENT_MISSING or not hasattr(
            receiver, "_RTCRtpReceiver__decoder_queue"):
        raise _incompatible("cannot revive a recycled RTCRtpReceiver (decoder internals moved)")
    new_track = rtcrtpreceiver.RemoteStreamTrack(
        kind=receiver.track.kind if receiver.track else "audio")
    receiver._track = new_track
    if thread is None:
        thread = threading.Thread(
            target=rtcrtpreceiver.decoder_worker, name=new_track.kind + "-decoder",
            args=(asyncio.get_running_loop(),
                  getattr(receiver, "_RTCRtpReceiver__decoder_queue"),  # noqa: B009
                  new_track._queue,
                  getattr(receiver, "_RTCRtpReceiver__decoder_error")),  # noqa: B009
            daemon=True)
        setattr(receiver, name, thread)
        thread.start()
    return new_track
