"""Raw SRTP datagram I/O for the forwarder (the hot path, kept out of aiortc's Python).

* :class:`ReceiveTap` sits on the UDP sockets of one aiortc DTLS transport: it reads
  them itself in place of asyncio's datagram transport (or, on other event loops,
  wraps aioice's ``StunProtocol.datagram_received`` per instance). An SRTP packet whose
  SSRC has a registered route is unprotected in the tap's buffer and handed to that
  route synchronously, without aioice's STUN parse attempt, its queue, the DTLS
  transport's receive task, aiortc's ``RtpPacket.parse`` and its receiver pipeline.
  Every other datagram (STUN, DTLS, SCTP, RTCP, RTP of other SSRCs) goes to the
  protocol as before.

Relies on private names of aiortc 1.16 / aioice 0.13 and asyncio's selector transport,
reached through :mod:`aiolivekit._compat`; :func:`tap_available` says whether they
exist (callers then keep the aiortc path).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import struct
import weakref
from collections.abc import Callable
from typing import Any

from aiortc.rtp import RtcpByePacket, RtcpPacket, RtcpRrPacket, RtcpSdesPacket, RtcpSrPacket

from .._compat import (
    aioice as ice_compat,
    aiortc as aiortc_compat,
    asyncio_transport as transport_compat,
    pylibsrtp as srtp_compat,
)
from ..webrtc.srtp import FastSrtp, fast_srtp_for
from .config import ForwardingOptions
from .read_batching import ReadBatcher, batcher_for

__all__ = ["ReceiveTap", "tap_available"]

logger = logging.getLogger(__name__)

# RTCP whose aiortc handlers (RTCRtpSender/RTCRtpReceiver._handle_rtcp_packet) never wait:
# a tap that reads the socket runs them at once instead of through the transport's task
_SYNC_RTCP = (RtcpRrPacket, RtcpSrPacket, RtcpSdesPacket, RtcpByePacket)


def tap_available(dtls: Any) -> bool:
    """Whether ``dtls`` (an aiortc ``RTCDtlsTransport``) exposes what :class:`ReceiveTap` uses."""
    return (
        srtp_compat.binding_available()
        and aiortc_compat.dtls_tap_hooks_ok(dtls)
        and ice_compat.dtls_stun_protocols(dtls) is not None
    )


RawHandler = Callable[[memoryview, int], None]
"""A route's handler: ``handler(buffer, length)``, the plaintext RTP packet being the
first ``length`` bytes of ``buffer`` (valid only during the call)."""

# a receive buffer holds any UDP datagram (IPv4 payloads end at 65 507 bytes)
_RX_SIZE = 65536
_ssrc_at_8 = struct.Struct("!I").unpack_from

# one tap per aiortc DTLS transport, dropped with the transport
_taps: weakref.WeakKeyDictionary[Any, ReceiveTap] = weakref.WeakKeyDictionary()


class ReceiveTap:
    """Synchronous SRTP receive path for chosen SSRCs of one DTLS transport.

    Where it can (asyncio's selector loop), the tap reads the transport's UDP sockets
    itself: each datagram lands in one preallocated buffer and a routed SRTP packet is
    decrypted there in place, so a packet costs one ``recvfrom_into`` and one
    ``srtp_unprotect`` before its handler. Elsewhere it wraps the protocols'
    ``datagram_received``. Everything not routed goes to the protocol unchanged.
    """

    def __init__(self, dtls: Any, options: ForwardingOptions | None = None) -> None:
        # weak: the tap is the value of a WeakKeyDictionary keyed by this transport, and a
        # strong reference would keep the transport (and its whole PC) alive for ever
        self._dtls_ref = weakref.ref(dtls)
        self.options = options if options is not None else ForwardingOptions()
        self._routes: dict[int, RawHandler] = {}
        self._hooked: list[Any] = []  # protocols whose datagram_received is wrapped
        self._readers: list[Any] = []  # protocols whose socket the tap reads
        self._batcher: ReadBatcher | None = None  # reads those sockets (else the loop)
        self._errors = 0
        self.packets = 0
        self._rx = bytearray(_RX_SIZE)
        self._rx_view = memoryview(self._rx)
        ffi, lib = srtp_compat.ffi(), srtp_compat.lib()
        self._rx_c = ffi.from_buffer(self._rx)
        self._rx_len = ffi.new("int *")
        self._unprotect = lib.srtp_unprotect
        self._unprotect_rtcp = lib.srtp_unprotect_rtcp
        self._fast_rx: FastSrtp | None = None  # the receive session's libsrtp context
        self._rtcp = False  # SRTCP handled here too (take_rtcp)
        self._tasks: set[asyncio.Future[Any]] = set()
        self.rtcp_packets = 0

    @classmethod
    def for_transport(cls, dtls: Any, options: ForwardingOptions | None = None
                      ) -> ReceiveTap | None:
        """The transport's tap (created on first use, with ``options``); ``None`` if
        internals are missing."""
        tap = ReceiveTap.of(dtls)
        if tap is None:
            if not tap_available(dtls):
                logger.warning("aiortc/aioice internals changed: no raw SRTP receive path")
                return None
            tap = _taps[dtls] = cls(dtls, options)
        return tap

    @staticmethod
    def of(dtls: Any) -> ReceiveTap | None:
        """The transport's tap if one was created."""
        try:
            return _taps.get(dtls)
        except TypeError:  # not weakly referenceable: not an aiortc transport
            return None

    @property
    def _dtls(self) -> Any:
        return self._dtls_ref()

    @property
    def routes(self) -> dict[int, RawHandler]:
        return self._routes

    @property
    def batcher(self) -> ReadBatcher | None:
        """The batcher that reads the tap's sockets, if any (its handlers may then put
        their sends in :attr:`ReadBatcher.sends`)."""
        return self._batcher

    @property
    def reads_sockets(self) -> bool:
        """Whether the tap reads at least one socket itself."""
        return bool(self._readers)

    def add_route(self, ssrc: int, handler: RawHandler) -> None:
        """Send RTP of ``ssrc`` to ``handler`` from now on."""
        self._routes[ssrc] = handler
        self._hook()

    def remove_route(self, ssrc: int, handler: RawHandler | None = None) -> None:
        if handler is None or self._routes.get(ssrc) == handler:
            self._routes.pop(ssrc, None)
        if not self._routes and not self._rtcp:
            self._unhook()

    def take_rtcp(self) -> bool:
        """Handle the transport's SRTCP too, where the tap reads the sockets itself:
        reports (RR, SR, SDES, BYE) go to aiortc's handlers synchronously, compound
        packets with feedback (NACK, PLI, REMB...) to aiortc's own coroutine in a task,
        none through aioice's queue and the transport's receive task. Returns whether
        the tap reads a socket (else aiortc keeps its path)."""
        self._rtcp = True
        self._hook()
        return bool(self._readers)

    def _hook(self) -> None:
        dtls = self._dtls
        protocols = (ice_compat.dtls_stun_protocols(dtls) if dtls is not None else None) or []
        for protocol in protocols:
            if any(p is protocol for p in self._hooked) or any(
                p is protocol for p in self._readers
            ):
                continue
            transport = getattr(protocol, "transport", None)
            if self.options.socket_reader and transport_compat.readable_by_us(transport):
                sock = transport_compat.datagram_socket(transport)
                closing = transport.is_closing  # type: ignore[union-attr]
                batcher = batcher_for(transport_compat.transport_loop(transport),
                                      self.options.read_batch_window)
                if batcher is not None:  # one reader for all sockets, see read_batching
                    transport_compat.remove_transport_reader(transport)
                    batcher.add(sock, functools.partial(self._on_readable, sock, protocol,
                                                        closing))
                    self._batcher = batcher  # the loop's: the same for all of them
                else:
                    transport_compat.replace_transport_reader(
                        transport, self._on_readable, sock, protocol, closing)
                self._readers.append(protocol)
            else:
                ice_compat.divert_datagram_received(protocol, self._on_datagram)
                self._hooked.append(protocol)

    def _unhook(self) -> None:
        hooked, self._hooked = self._hooked, []
        for protocol in hooked:
            ice_compat.restore_datagram_received(protocol)
        readers, self._readers = self._readers, []
        batcher, self._batcher = self._batcher, None
        for protocol in readers:
            transport = protocol.transport
            if batcher is not None:
                batcher.remove(transport_compat.datagram_socket(transport))
            transport_compat.give_back_reader(transport)  # unless it is closing

    def _drop_reader(self, protocol: Any) -> None:
        """Stop reading the socket of ``protocol``, whose transport is closing (asyncio
        removed its own reader then; a batched socket has to leave the batcher)."""
        self._readers = [known for known in self._readers if known is not protocol]
        if self._batcher is not None:
            self._batcher.remove(transport_compat.datagram_socket(protocol.transport))
            if not self._readers:
                self._batcher = None

    def _on_readable(self, sock: socket.socket, protocol: Any,
                    closing: Callable[[], bool] | None = None) -> None:
        """The socket is readable (asyncio's reader callback in place of the transport's,
        or the batcher's); ``closing`` is its transport's ``is_closing``."""
        if closing is None:
            closing = protocol.transport.is_closing
        if closing():
            self._drop_reader(protocol)
            return
        try:
            n, addr = sock.recvfrom_into(self._rx)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            protocol.error_received(exc)
            return
        rx = self._rx
        # SRTP or SRTCP: RFC 7983 first byte 128..191; SRTCP packet types are 192..223
        if n >= 12 and 127 < rx[0] < 192:
            if not 191 < rx[1] < 224:
                handler = self._routes.get(_ssrc_at_8(rx, 8)[0])
                if handler is not None and self._take(handler, n):
                    return
            elif self._rtcp and self._take_rtcp(n):
                return
        protocol.datagram_received(self._rx_view[:n].tobytes(), addr)

    def _on_datagram(self, original: Callable[[bytes, Any], None], data: bytes, addr: Any) -> None:
        """``datagram_received`` of a wrapped protocol (when the tap cannot read)."""
        n = len(data)
        if n >= 12 and 127 < data[0] < 192 and not 191 < data[1] < 224:
            handler = self._routes.get(int.from_bytes(data[8:12], "big"))
            if handler is not None and n <= _RX_SIZE:
                self._rx[:n] = data
                if self._take(handler, n):
                    return
        original(data, addr)

    def _take(self, handler: RawHandler, n: int) -> bool:
        """Decrypt the routed SRTP packet in the receive buffer (``n`` bytes) and hand it
        over; ``False`` if the DTLS transport is not ready (the packet then goes the
        normal way)."""
        length = self._decrypt(n, self._unprotect)
        if length is None:
            return False
        if length >= 0:
            self.packets += 1
            try:
                handler(self._rx_view, length)
            except Exception:  # never let it reach (and close) the UDP transport
                self._errors += 1
                if self._errors <= 5:
                    logger.exception("raw RTP handler failed")
        return True

    def _decrypt(self, n: int, unprotect: Any) -> int | None:
        """Run libsrtp's ``unprotect`` on the ``n`` bytes in the receive buffer: the
        plaintext length, -1 if libsrtp refused the packet (bad or replayed: dropped,
        as aiortc does), ``None`` if the DTLS transport is not ready."""
        dtls = self._dtls
        if dtls is None:
            return None
        session = aiortc_compat.dtls_receive_session(dtls, n)  # counts the datagram
        if session is None:
            return None
        fast = self._fast_rx
        if fast is None or fast.session is not session:
            fast = self._fast_rx = fast_srtp_for(dtls, tx=False)
            if fast is None:
                return None
        length = self._rx_len
        length[0] = n
        if unprotect(fast._srtp, self._rx_c, length):
            return -1
        result: int = length[0]
        return result

    def _take_rtcp(self, n: int) -> bool:
        """Decrypt the SRTCP packet in the receive buffer and hand its RTCP packets to
        aiortc's recipients (what ``RTCDtlsTransport._handle_rtcp_data`` does);
        ``False`` if the DTLS transport is not ready."""
        length = self._decrypt(n, self._unprotect_rtcp)
        if length is None:
            return False
        if length < 0:
            return True
        dtls = self._dtls
        data = self._rx_view[:length].tobytes()
        try:
            packets = RtcpPacket.parse(data)
        except ValueError:
            return True  # aiortc drops it too
        self.rtcp_packets += 1
        try:
            if all(isinstance(p, _SYNC_RTCP) for p in packets):
                for packet in packets:
                    for recipient in aiortc_compat.rtcp_recipients(dtls, packet):
                        self._run_now(aiortc_compat.handle_rtcp_packet(recipient, packet))
            else:
                self._spawn(aiortc_compat.dtls_handle_rtcp_data(dtls, data))
        except Exception:  # never let it reach (and close) the UDP transport
            self._errors += 1
            if self._errors <= 5:
                logger.exception("RTCP handling failed")
        return True

    def _run_now(self, coro: Any) -> None:
        """Run an aiortc RTCP handler coroutine to its end now; one that waits after all
        (another aiortc version) is finished by a task."""
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
        self._spawn(transport_compat.finish_coroutine(coro, waiting))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._errors += 1
            if self._errors <= 5:
                logger.error("RTCP handling failed", exc_info=task.exception())
