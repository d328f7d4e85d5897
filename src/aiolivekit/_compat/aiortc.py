"""aiortc internals, written for aiortc 1.16.0 (pinned in pyproject.toml).

Each function names the private attribute it reads or writes so that an aiortc upgrade
is checked here and nowhere else.
"""

from __future__ import annotations

from typing import Any

__all__ = ["dtls_srtp_session"]


def dtls_srtp_session(dtls: Any, tx: bool) -> Any | None:
    """The pylibsrtp ``Session`` an ``RTCDtlsTransport`` protects with (``tx``) or
    unprotects with; ``None`` before the DTLS handshake set the keys up
    (``RTCDtlsTransport._tx_srtp`` / ``._rx_srtp``)."""
    return getattr(dtls, "_tx_srtp" if tx else "_rx_srtp", None)


# --- server (SFU) hooks ---
# The forwarder subclasses aiortc's RTCRtpReceiver / RTCRtpSender, swaps the classes of
# the objects aiortc created, replaces the receiver's decoder queue and jitter buffer,
# and drives the DTLS transport's SRTP sessions and counters itself.

import logging  # noqa: E402
import queue  # noqa: E402
import time  # noqa: E402
from collections.abc import Coroutine  # noqa: E402

import aiortc as _aiortc  # noqa: E402
from aiortc.rtcdtlstransport import State as _DtlsState  # noqa: E402
from aiortc.rtcrtpreceiver import StreamStatistics as _StreamStatistics  # noqa: E402

from . import PINNED, require_hooks  # noqa: E402

__all__ += [
    "RECEIVER_ATTRS",
    "RECEIVER_METHODS",
    "SENDER_ATTRS",
    "SENDER_METHODS",
    "STATS_ATTRS",
    "add_dtls_tx",
    "check_receiver",
    "check_sender",
    "dtls_handle_rtcp_data",
    "dtls_receive_session",
    "dtls_send_hooks_ok",
    "dtls_send_rtp",
    "dtls_send_session",
    "dtls_tap_hooks_ok",
    "ensure_decoder_sink",
    "handle_rtcp_packet",
    "install_enabled_property",
    "install_sender_report_counters",
    "next_rtx_sequence",
    "prefer_dtls_server",
    "receiver_remote_streams",
    "receiver_started",
    "record_sender_report",
    "rtcp_recipients",
    "rtx_original_ssrc",
    "send_pli",
    "send_rtcp",
    "sender_cname",
    "sender_events",
    "sender_mid",
    "sender_report_counters",
    "sender_rtx_payload_type",
    "sender_ssrcs",
    "sender_started",
    "set_sender_msid",
    "stats_inline_ok",
    "stop_decoding",
    "swap_class",
    "take_enabled",
    "transceiver_codecs",
    "transceiver_has_codec_preferences",
    "transceiver_header_extensions",
    "update_stream_statistics",
]

_logger = logging.getLogger(__name__)

RECEIVER_ATTRS = (
    "_RTCRtpReceiver__decoder_queue",
    "_RTCRtpReceiver__codecs",
    "_RTCRtpReceiver__rtx_ssrc",
    "_RTCRtpReceiver__started",
    "_RTCRtpReceiver__jitter_buffer",
)
RECEIVER_METHODS = ("_handle_rtp_packet", "_send_rtcp_pli", "receive")
# StreamStatistics fields that update_stream_statistics writes itself
STATS_ATTRS = ("max_seq", "base_seq", "packets_received", "cycles", "_clockrate",
               "_last_timestamp", "_last_arrival", "_jitter_q4")
SENDER_ATTRS = (
    "_RTCRtpSender__rtp_started",
    "_RTCRtpSender__rtp_exited",
    "_RTCRtpSender__ntp_timestamp",
    "_RTCRtpSender__rtp_timestamp",
    "_RTCRtpSender__octet_count",
    "_RTCRtpSender__packet_count",
    "_RTCRtpSender__rtx_payload_type",
    "_RTCRtpSender__rtx_sequence_number",
    "_RTCRtpSender__mid",
    "_RTCRtpSender__started",
    "_RTCRtpSender__rtcp_started",
    "_RTCRtpSender__rtcp_exited",
    "_RTCRtpSender__lsr",
)
SENDER_METHODS = (
    "_run_rtp",
    "_run_rtcp",
    "_send_rtcp",
    "_retransmit",
    "_send_keyframe",
    "send",
    "_handle_rtcp_packet",
)

_CONNECTED = _DtlsState.CONNECTED

if getattr(_aiortc, "__version__", None) != PINNED["aiortc"]:
    _logger.warning(
        "aiortc %s installed; the RTP forwarder was written against %s private names",
        getattr(_aiortc, "__version__", "?"), PINNED["aiortc"],
    )


def check_receiver(receiver: Any) -> None:
    """Raise ``AiortcCompatibilityError`` naming what the forwarder needs and
    ``receiver`` (an ``RTCRtpReceiver``) lacks."""
    require_hooks("aiortc", receiver, RECEIVER_ATTRS, RECEIVER_METHODS)


def check_sender(sender: Any) -> None:
    """Likewise for an ``RTCRtpSender`` turned into a forwarding sender."""
    require_hooks("aiortc", sender, SENDER_ATTRS, SENDER_METHODS)


def take_enabled(obj: Any) -> bool:
    """Remove and return the ``_enabled`` flag aiortc's ``__init__`` stored on a sender or
    receiver (before :func:`swap_class` to a class that keeps it elsewhere)."""
    return bool(obj.__dict__.pop("_enabled", True))


def install_enabled_property(cls: type, prop: property) -> None:
    """Make ``_enabled`` (which the transceiver sets when its direction changes) a
    property of ``cls``, a subclass of ``RTCRtpSender`` or ``RTCRtpReceiver``."""
    cls._enabled = prop  # type: ignore[attr-defined]


def set_sender_msid(sender: Any, stream_id: str, track_id: str) -> None:
    """The ``a=msid:<stream_id> <track_id>`` of the sender's m-line in later offers
    (``_stream_id`` / ``_track_id``)."""
    sender._stream_id = stream_id
    sender._track_id = track_id


def swap_class(obj: Any, cls: type) -> None:
    """Turn ``obj``, created by aiortc, into an instance of ``cls``, a subclass of its
    class that adds no slots (``obj.__class__ = cls``)."""
    if not isinstance(obj, cls.__mro__[1]):
        raise TypeError(f"{cls.__name__} does not extend {type(obj).__name__}")
    obj.__class__ = cls


# -- receiver ---------------------------------------------------------------------


class _DecoderSink:
    """Replaces the receiver's decoder queue: frames are dropped, only the stop
    sentinel reaches the (idle) decoder thread."""

    def __init__(self) -> None:
        self._stop: queue.Queue[Any] = queue.Queue()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            self._stop.put(None)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self._stop.get(block, timeout)


class _NoFrameJitterBuffer:
    """Replaces the receiver's jitter buffer: the relay never decodes, so it never
    assembles frames (saves about a fifth of the receive cost per packet)."""

    def add(self, packet: Any) -> tuple[bool, None]:
        return False, None


def receiver_started(receiver: Any) -> bool:
    """Whether ``receive()`` ran already (``_RTCRtpReceiver__started``)."""
    return bool(receiver._RTCRtpReceiver__started)


def stop_decoding(receiver: Any) -> None:
    """Never decode nor assemble frames: the decoder thread aiortc starts gets a queue
    that drops frames, the jitter buffer one that keeps nothing."""
    receiver._RTCRtpReceiver__decoder_queue = _DecoderSink()
    receiver._RTCRtpReceiver__jitter_buffer = _NoFrameJitterBuffer()


def ensure_decoder_sink(receiver: Any) -> None:
    """Before ``receive()`` starts the decoder thread: make sure its queue is a sink."""
    if not receiver._RTCRtpReceiver__started and not isinstance(
        receiver._RTCRtpReceiver__decoder_queue, _DecoderSink
    ):
        receiver._RTCRtpReceiver__decoder_queue = _DecoderSink()


def rtx_original_ssrc(receiver: Any, rtx_ssrc: int) -> int | None:
    """The media SSRC an RTX SSRC repairs (``_RTCRtpReceiver__rtx_ssrc``)."""
    ssrc: int | None = receiver._RTCRtpReceiver__rtx_ssrc.get(rtx_ssrc)
    return ssrc


def receiver_remote_streams(receiver: Any) -> dict[int, Any]:
    """The receiver's ``{ssrc: StreamStatistics}`` its receiver reports read
    (``_RTCRtpReceiver__remote_streams``; an empty dict if the name moved)."""
    streams: dict[int, Any] = getattr(receiver, "_RTCRtpReceiver__remote_streams", {})
    return streams


def stats_inline_ok() -> bool:
    """Whether :func:`update_stream_statistics` matches this aiortc's ``StreamStatistics``."""
    probe = _StreamStatistics(48000)
    return all(hasattr(probe, name) for name in STATS_ATTRS)


def update_stream_statistics(stats: Any, seq: int, ts: int, now: float) -> None:
    """What ``StreamStatistics.add`` does for a packet (RFC 3550 A.1, A.8), without
    building an ``RtpPacket`` (check :func:`stats_inline_ok` first)."""
    max_seq = stats.max_seq
    stats.packets_received += 1
    if max_seq is None:
        stats.base_seq = seq
    if max_seq is None or (seq != max_seq and ((seq - max_seq) & 0xFFFF) < 0x8000):
        arrival = int(now * stats._clockrate)
        if max_seq is not None and seq < max_seq:
            stats.cycles += 0x10000
        stats.max_seq = seq
        last_ts = stats._last_timestamp
        if ts != last_ts and stats.packets_received > 1:
            diff = abs((arrival - stats._last_arrival) - (ts - last_ts))
            stats._jitter_q4 += diff - ((stats._jitter_q4 + 8) >> 4)
        stats._last_arrival = arrival
        stats._last_timestamp = ts


def send_pli(receiver: Any, media_ssrc: int) -> Coroutine[Any, Any, None]:
    """The receiver's coroutine sending a PLI upstream (``_send_rtcp_pli``)."""
    coro: Coroutine[Any, Any, None] = receiver._send_rtcp_pli(media_ssrc)
    return coro


# -- sender -----------------------------------------------------------------------


def install_sender_report_counters(cls: type, *, ntp: property, rtp_timestamp: property,
                                   octets: property, packets: property) -> None:
    """Make the counters aiortc's sender-report loop reads properties of ``cls`` (a
    subclass of ``RTCRtpSender``; data descriptors win over the instance attributes
    aiortc's ``__init__`` created)."""
    cls._RTCRtpSender__ntp_timestamp = ntp  # type: ignore[attr-defined]
    cls._RTCRtpSender__rtp_timestamp = rtp_timestamp  # type: ignore[attr-defined]
    cls._RTCRtpSender__octet_count = octets  # type: ignore[attr-defined]
    cls._RTCRtpSender__packet_count = packets  # type: ignore[attr-defined]


def sender_report_counters(sender: Any) -> tuple[int, int, int, int]:
    """``(ntp, rtp_timestamp, packet_count, octet_count)`` as aiortc's loop reads them."""
    return (sender._RTCRtpSender__ntp_timestamp, sender._RTCRtpSender__rtp_timestamp,
            sender._RTCRtpSender__packet_count, sender._RTCRtpSender__octet_count)


def sender_ssrcs(sender: Any) -> tuple[int, int]:
    """The sender's media and RTX SSRCs (``_ssrc``, ``_rtx_ssrc``)."""
    return sender._ssrc, sender._rtx_ssrc


def send_rtcp(sender: Any, packets: list[Any]) -> Coroutine[Any, Any, None]:
    """The sender's coroutine sending RTCP packets (``_send_rtcp``)."""
    coro: Coroutine[Any, Any, None] = sender._send_rtcp(packets)
    return coro


def sender_started(sender: Any) -> bool:
    """Whether ``send()`` ran already (``_RTCRtpSender__started``)."""
    return bool(sender._RTCRtpSender__started)


def sender_mid(sender: Any) -> str | None:
    """The sender's MID (``_RTCRtpSender__mid``)."""
    mid: str | None = sender._RTCRtpSender__mid
    return mid


def sender_rtx_payload_type(sender: Any) -> int | None:
    """The negotiated RTX payload type (``_RTCRtpSender__rtx_payload_type``)."""
    pt: int | None = sender._RTCRtpSender__rtx_payload_type
    return pt


def next_rtx_sequence(sender: Any) -> int:
    """The next RTX sequence number (``_RTCRtpSender__rtx_sequence_number``, advanced)."""
    seq: int = sender._RTCRtpSender__rtx_sequence_number
    sender._RTCRtpSender__rtx_sequence_number = (seq + 1) & 0xFFFF
    return seq


def sender_events(sender: Any) -> tuple[Any, Any, Any, Any]:
    """aiortc's ``(rtp_started, rtp_exited, rtcp_started, rtcp_exited)`` events, which
    ``stop()`` waits for."""
    return (sender._RTCRtpSender__rtp_started, sender._RTCRtpSender__rtp_exited,
            sender._RTCRtpSender__rtcp_started, sender._RTCRtpSender__rtcp_exited)


def record_sender_report(sender: Any, ntp: int) -> None:
    """What aiortc's loop records after a sender report to turn the receiver's LSR/DLSR
    into a round trip (``__lsr``, ``__lsr_time``)."""
    sender._RTCRtpSender__lsr = (ntp >> 16) & 0xFFFFFFFF
    sender._RTCRtpSender__lsr_time = time.time()


def sender_cname(sender: Any) -> str | None:
    """The CNAME ``send()`` set (``_RTCRtpSender__cname``), or ``None``."""
    cname: str | None = getattr(sender, "_RTCRtpSender__cname", None)
    return cname


# -- DTLS transport -----------------------------------------------------------------


def dtls_send_rtp(dtls: Any) -> Any:
    """The transport's coroutine function protecting and sending one RTP packet
    (``RTCDtlsTransport._send_rtp``)."""
    return dtls._send_rtp


def dtls_send_session(dtls: Any) -> Any | None:
    """The send SRTP session while the transport is connected, else ``None``."""
    return dtls._tx_srtp if dtls._state is _CONNECTED else None


def dtls_receive_session(dtls: Any, count: int) -> Any | None:
    """The receive SRTP session while the transport is connected (``None`` otherwise);
    then also counts one received datagram of ``count`` bytes in the transport's
    statistics, as its own receive path would."""
    if dtls._state is not _CONNECTED:
        return None
    session = dtls._rx_srtp
    if session is not None:
        dtls._RTCDtlsTransport__rx_bytes += count
        dtls._RTCDtlsTransport__rx_packets += 1
    return session


def add_dtls_tx(dtls: Any, octets: int, packets: int) -> None:
    """Count datagrams sent around the transport in its statistics."""
    dtls._RTCDtlsTransport__tx_bytes += octets
    dtls._RTCDtlsTransport__tx_packets += packets


def dtls_send_hooks_ok(dtls: Any) -> bool:
    """Whether the private names :func:`dtls_send_session` and :func:`add_dtls_tx` use
    exist on ``dtls``."""
    return (
        hasattr(dtls, "_state")
        and hasattr(dtls, "_tx_srtp")
        and hasattr(dtls, "_RTCDtlsTransport__tx_bytes")
        and hasattr(dtls, "_RTCDtlsTransport__tx_packets")
    )


def dtls_tap_hooks_ok(dtls: Any) -> bool:
    """Whether the private names :func:`dtls_receive_session` uses exist on ``dtls``."""
    return (
        hasattr(dtls, "_state")
        and hasattr(dtls, "_rx_srtp")
        and hasattr(dtls, "_RTCDtlsTransport__rx_bytes")
        and hasattr(dtls, "_RTCDtlsTransport__rx_packets")
    )


def rtcp_recipients(dtls: Any, packet: Any) -> Any:
    """The receivers / senders an RTCP packet is for (``_rtp_router.route_rtcp``)."""
    return dtls._rtp_router.route_rtcp(packet)


def handle_rtcp_packet(recipient: Any, packet: Any) -> Coroutine[Any, Any, None]:
    """The recipient's coroutine handling one RTCP packet (``_handle_rtcp_packet``)."""
    coro: Coroutine[Any, Any, None] = recipient._handle_rtcp_packet(packet)
    return coro


def dtls_handle_rtcp_data(dtls: Any, data: bytes) -> Coroutine[Any, Any, None]:
    """The transport's coroutine handling one decrypted compound RTCP packet."""
    coro: Coroutine[Any, Any, None] = dtls._handle_rtcp_data(data)
    return coro


def prefer_dtls_server(dtls: Any) -> None:
    """Take the DTLS server role unless a negotiation chose one (``_role``/``_set_role``)."""
    if dtls._role == "auto":
        dtls._set_role("server")


# -- transceiver --------------------------------------------------------------------


def transceiver_codecs(transceiver: Any) -> list[Any]:
    """The codecs negotiated on a transceiver (``_codecs``; empty before)."""
    return list(getattr(transceiver, "_codecs", []) or [])


def transceiver_has_codec_preferences(transceiver: Any) -> bool:
    """Whether ``setCodecPreferences`` was called (``_preferred_codecs``)."""
    return bool(transceiver._preferred_codecs)


def transceiver_header_extensions(transceiver: Any) -> list[Any]:
    """The header extensions the transceiver answers with (``_headerExtensions``; the
    list itself, to extend)."""
    extensions: list[Any] = transceiver._headerExtensions
    return extensions
