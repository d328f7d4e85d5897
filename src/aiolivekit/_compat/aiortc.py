"""aiortc internals, written for aiortc 1.16.0 (pinned in pyproject.toml).

Each function names the private attribute it reads or writes so that an aiortc upgrade
is checked here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiortc
from aiortc import RTCPeerConnection, RTCRtpSender, rtcrtpreceiver
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpreceiver import StreamStatistics

from ..errors import AiortcCompatibilityError
from . import PINNED, installed_version, require_hooks

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
# ``RtpPacket._data``, ``RTCSctpTransport._remote_max_message_size`` and its send queues
# (``_data_channel_queue``, ``_outbound_queue``, ``_sent_queue``: aiortc_sctp.py).
#
# CLIENT_MISSING is the import-time check of the class-level hooks; the instance-level
# ones are checked where they are first used (each function says what it does then).

__all__ += [
    "CLIENT_MISSING",
    "OPUS_PAYLOAD_TYPE",
    "RED_INSTALLED",
    "RED_PAYLOAD_TYPE",
    "depayloaded",
    "dtls_connected",
    "hook_sender",
    "ice_connection",
    "ice_connections",
    "install_red_codec",
    "jitter_buffer",
    "receiver_codecs",
    "red_inner_payload_type",
    "replace_jitter_buffer",
    "revive_receiver",
    "sender_fraction_lost",
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


# ------------------------------------------------------------------ RED (RFC 2198)

#: the payload types libwebrtc and pion use; the same on every peer makes the Opus
#: payload type inside a forwarded RED packet match the subscriber's
OPUS_PAYLOAD_TYPE = 111
RED_PAYLOAD_TYPE = 63


def install_red_codec() -> bool:
    """Make aiortc negotiate ``audio/red`` (``a=fmtp:63 111/111``) next to Opus, and give
    Opus the payload type 111 (aiortc's default is 96).

    aiortc has no RED codec: its receivers drop packets of a payload type they did not
    negotiate and it never offers or accepts one. This adds one to aiortc's codec table
    (``aiortc.codecs.CODECS``, read at every negotiation) right after Opus, so an offer
    without codec preferences still puts Opus first; an answer follows the offer's order.
    Nothing encodes or decodes RED in aiortc: our receive path (``media.jitter``) and the
    direct RTP writer do, and the SFU forwards it. Idempotent; False if the table moved.
    """
    try:
        from aiortc import codecs as aiortc_codecs
        from aiortc.rtcrtpparameters import RTCRtpCodecParameters
    except ImportError:
        return False
    table = getattr(aiortc_codecs, "CODECS", None)
    audio = table.get("audio") if isinstance(table, dict) else None
    if not isinstance(audio, list):
        logger.warning("aiortc's codec table moved: audio/red is not negotiated")
        return False
    if any(str(getattr(c, "mimeType", "")).lower() == "audio/red" for c in audio):
        return True
    opus = next((c for c in audio if str(getattr(c, "mimeType", "")).lower() == "audio/opus"),
                None)
    if opus is None:
        return False
    if any(c.payloadType in (OPUS_PAYLOAD_TYPE, RED_PAYLOAD_TYPE) for c in audio if c is not opus):
        logger.warning("aiortc uses payload type %d or %d: audio/red is not negotiated",
                       OPUS_PAYLOAD_TYPE, RED_PAYLOAD_TYPE)
        return False
    opus.payloadType = OPUS_PAYLOAD_TYPE
    audio.insert(audio.index(opus) + 1, RTCRtpCodecParameters(
        mimeType="audio/red", clockRate=48000, channels=2, payloadType=RED_PAYLOAD_TYPE,
        parameters={f"{OPUS_PAYLOAD_TYPE}/{OPUS_PAYLOAD_TYPE}": None}))
    return True


def red_inner_payload_type(codec: Any) -> int | None:
    """The payload type a negotiated ``audio/red`` codec carries (its fmtp ``111/111``)."""
    for key in getattr(codec, "parameters", {}) or {}:
        head = str(key).split("/", 1)[0]
        if head.isdigit():
            return int(head)
    return None


RED_INSTALLED = install_red_codec()
# Opus offers/accepts ``nack`` (audio NACK, aiortc_nack.py)
from .aiortc_nack import OPUS_NACK_INSTALLED  # noqa: E402,F401

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


# ------------------------------------------------------------------ DTLS transport


def dtls_connected(dtls: Any) -> bool:
    """Whether an ``RTCDtlsTransport`` finished its handshake (``_state``)."""
    return dtls._state is DtlsState.CONNECTED  # type: ignore[no-any-return]


# ------------------------------------------------------------------ RTP sender


def hook_sender(
    sender: Any,
    next_frame: Callable[[Callable[[Any], Awaitable[Any]], Any], Awaitable[Any]],
    keyframe: Callable[[Callable[[], None]], None],
    nacked: Callable[[int], None] | None = None,
) -> None:
    """Wrap methods of one ``RTCRtpSender`` instance: its RTP loop's
    ``_next_encoded_frame(codec)`` becomes ``next_frame(original, codec)``, its PLI/FIR
    handler ``_send_keyframe()`` becomes ``keyframe(original)``, and ``nacked(seq)`` is
    told each sequence number a NACK asks for (``_retransmit``). Raises
    :class:`AiortcCompatibilityError` if aiortc's sender lacks them."""
    orig_next = getattr(sender, "_next_encoded_frame", None)
    orig_keyframe = getattr(sender, "_send_keyframe", None)
    orig_retransmit = getattr(sender, "_retransmit", None)
    if orig_next is None or orig_keyframe is None or orig_retransmit is None:
        raise _incompatible("RTCRtpSender._next_encoded_frame / _send_keyframe / "
                            "_retransmit moved")
    if nacked is not None:
        async def _retransmit(sequence_number: int) -> None:
            nacked(sequence_number)
            await orig_retransmit(sequence_number)

        sender._retransmit = _retransmit

    async def _next_encoded_frame(codec: Any) -> Any:
        return await next_frame(orig_next, codec)

    def _send_keyframe() -> None:
        keyframe(orig_keyframe)

    sender._next_encoded_frame = _next_encoded_frame
    sender._send_keyframe = _send_keyframe


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


def sender_loss_report(sender: Any) -> tuple[float, Any] | None:
    """``(fraction lost 0..1, its timestamp)`` of the latest receiver report about
    ``sender``'s stream (``remote-inbound-rtp`` in ``__stats``); a new report has a new
    timestamp. None before the first one."""
    stats = getattr(sender, "_RTCRtpSender__stats", None)
    if not isinstance(stats, dict):
        return None
    for value in stats.values():
        if getattr(value, "type", "") == "remote-inbound-rtp":
            lost = getattr(value, "fractionLost", None)
            if isinstance(lost, (int, float)):
                return float(lost) / 256.0, getattr(value, "timestamp", None)
    return None


def sender_fraction_lost(sender: Any) -> float | None:
    """The loss fraction (0..1) in the latest RTCP receiver report about ``sender``'s
    stream (aiortc keeps it in its ``remote-inbound-rtp`` stats, ``__stats``); None
    before the first report, or when aiortc keeps it elsewhere."""
    report = sender_loss_report(sender)
    return None if report is None else report[0]


def receiver_codecs(receiver: Any) -> dict[int, Any]:
    """The codecs an ``RTCRtpReceiver`` receives, by payload type (``__codecs``); ``{}``
    when aiortc keeps them elsewhere."""
    codecs = getattr(receiver, "_RTCRtpReceiver__codecs", None)
    return codecs if isinstance(codecs, dict) else {}


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


# --- server (SFU) hooks ---
# The forwarder subclasses aiortc's RTCRtpReceiver / RTCRtpSender, swaps the classes of
# the objects aiortc created, replaces the receiver's decoder queue and jitter buffer,
# and drives the DTLS transport's SRTP sessions and counters itself.




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

RECEIVER_ATTRS = (
    "_RTCRtpReceiver__decoder_queue",
    "_RTCRtpReceiver__codecs",
    "_RTCRtpReceiver__rtx_ssrc",
    "_RTCRtpReceiver__started",
    "_RTCRtpReceiver__jitter_buffer",
)
RECEIVER_METHODS = ("_handle_rtp_packet", "_send_rtcp_pli", "_send_rtcp_nack", "receive")
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

_CONNECTED = DtlsState.CONNECTED

if getattr(aiortc, "__version__", None) != PINNED["aiortc"]:
    logger.warning(
        "aiortc %s installed; the RTP forwarder was written against %s private names",
        getattr(aiortc, "__version__", "?"), PINNED["aiortc"],
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


class _NackPerSsrc:
    """aiortc's receiver keeps one ``NackGenerator`` (``__nack_generator``), whose
    sequence space interleaved simulcast layers would corrupt: one per SSRC instead.
    aiortc reads ``missing`` right after ``add()``: it is the SSRC just added to."""

    def __init__(self) -> None:
        self._by_ssrc: dict[int, Any] = {}
        self.missing: set[int] = set()

    def add(self, packet: Any) -> bool:
        generator = self._by_ssrc.get(packet.ssrc)
        if generator is None:
            if len(self._by_ssrc) >= 16:  # SSRCs come and go: keep a bounded set
                self._by_ssrc.clear()
            generator = self._by_ssrc[packet.ssrc] = rtcrtpreceiver.NackGenerator()
        missed = bool(generator.add(packet))
        self.missing = generator.missing
        return missed


def nack_per_ssrc(receiver: Any) -> None:
    """Give a video receiver one NACK generator per SSRC (simulcast layers)."""
    if getattr(receiver, "_RTCRtpReceiver__nack_generator", None) is not None:
        receiver._RTCRtpReceiver__nack_generator = _NackPerSsrc()


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
    probe = StreamStatistics(48000)
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


def tap_rtp_arrivals(dtls: Any, on_rtp: Callable[[bytes], None]) -> bool:
    """Call ``on_rtp(plaintext)`` for every RTP packet ``dtls`` decrypts on aiortc's
    path, before it is routed (wraps this instance's ``_handle_rtp_data``); False when
    the method moved. A second call replaces the callback."""
    original = getattr(type(dtls), "_handle_rtp_data", None)
    if not callable(original):
        return False

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        on_rtp(data)
        await original(dtls, data, arrival_time_ms)

    dtls._handle_rtp_data = handle_rtp_data
    return True
