"""Unit tests for the forwarder's raw SRTP I/O (FastSrtp, ReceiveTap) without a network."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import struct
from typing import Any

import pylibsrtp
import pytest
from aiortc.rtcdtlstransport import State

from aiolivekit.server.rtp_io import ReceiveTap
from aiolivekit.webrtc.srtp import FastSrtp, fast_srtp_for

KEY = bytes(range(30))


def _session(outbound: bool) -> pylibsrtp.Session:
    kind = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(key=KEY, ssrc_type=kind))


def _rtp(ssrc: int, seq: int, payload: bytes = b"opus-payload") -> bytes:
    return struct.pack("!BBHII", 0x80, 111, seq, seq * 960, ssrc) + payload


def test_fast_srtp_interoperates_with_pylibsrtp() -> None:
    fast_tx, ref_rx = FastSrtp(_session(True)), _session(False)
    ref_tx, fast_rx = _session(True), FastSrtp(_session(False))
    for seq in range(5):
        packet = _rtp(0x1234, seq, os.urandom(100))
        protected = fast_tx.protect(packet)
        assert protected != packet and len(protected) == len(packet) + 10
        assert ref_rx.unprotect(protected) == packet
        assert fast_rx.unprotect(ref_tx.protect(packet)) == packet
    with pytest.raises(pylibsrtp.Error):  # replay
        fast_rx.unprotect(ref_tx.protect(_rtp(0x1234, 3)))
    with pytest.raises(pylibsrtp.Error):  # authentication
        fast_rx.unprotect(bytearray(fast_tx.protect(_rtp(0x1234, 9)))[:-1] + b"\x00")
    with pytest.raises(ValueError):
        fast_tx.protect(bytes(1600))
    with pytest.raises(TypeError):
        FastSrtp(object())  # type: ignore[arg-type]


class _Protocol:
    def __init__(self) -> None:
        self.slow: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.slow.append(data)


class _Dtls:
    """The parts of aiortc's RTCDtlsTransport the tap reads."""

    def __init__(self) -> None:
        self._state = State.CONNECTED
        self._rx_srtp = _session(False)
        self._tx_srtp = _session(True)
        self._RTCDtlsTransport__rx_bytes = 0
        self._RTCDtlsTransport__rx_packets = 0
        self.protocols = [_Protocol(), _Protocol()]

        class _Conn:
            _protocols = self.protocols

        class _Ice:
            _connection = _Conn()

        self.transport = _Ice()


def test_receive_tap_routes_known_ssrcs_and_passes_the_rest() -> None:
    dtls = _Dtls()
    tap = ReceiveTap.for_transport(dtls)
    assert tap is not None and ReceiveTap.for_transport(dtls) is tap
    sender = _session(True)
    got: list[bytes] = []

    def collect(buf: memoryview, n: int) -> None:
        got.append(bytes(buf[:n]))

    tap.add_route(0xAAAA, collect)
    assert not tap.reads_sockets  # no asyncio transport here: the protocols are wrapped
    proto = dtls.protocols[0]
    packets = [_rtp(0xAAAA, s) for s in range(3)]
    for p in packets:
        proto.datagram_received(sender.protect(p), ("10.0.0.1", 5000))
    assert got == packets and proto.slow == [] and tap.packets == 3
    assert dtls._RTCDtlsTransport__rx_packets == 3
    other = sender.protect(_rtp(0xBBBB, 1))
    rtcp = bytes([0x81, 201, 0, 1]) + bytes(8)  # RTCP RR: never taken
    stun = bytes(20)
    for d in (other, rtcp, stun):
        dtls.protocols[1].datagram_received(d, ("10.0.0.1", 5000))
    assert dtls.protocols[1].slow == [other, rtcp, stun]
    # a corrupted packet of a routed SSRC is dropped, like aiortc does
    bad = bytearray(sender.protect(_rtp(0xAAAA, 7)))
    bad[-1] ^= 0xFF
    proto.datagram_received(bytes(bad), None)
    assert len(got) == 3 and proto.slow == []
    # not connected: aiortc's own path
    dtls._state = State.CLOSED
    late = sender.protect(_rtp(0xAAAA, 8))
    proto.datagram_received(late, None)
    assert proto.slow == [late]
    dtls._state = State.CONNECTED
    # removing the last route restores the protocols' own method
    tap.remove_route(0xAAAA, collect)
    assert "datagram_received" not in vars(proto)
    proto.datagram_received(sender.protect(_rtp(0xAAAA, 9)), None)
    assert len(proto.slow) == 2 and len(got) == 3


def test_receive_tap_contains_handler_errors() -> None:
    dtls = _Dtls()
    tap = ReceiveTap.for_transport(dtls)
    assert tap is not None

    def boom(data: memoryview, n: int) -> None:
        raise RuntimeError("handler bug")

    tap.add_route(1, boom)
    sender = _session(True)
    dtls.protocols[0].datagram_received(sender.protect(_rtp(1, 1)), None)  # no exception
    assert tap.packets == 1


def test_fast_srtp_for_caches_per_transport() -> None:
    dtls = _Dtls()
    tx = fast_srtp_for(dtls, tx=True)
    assert tx is not None and fast_srtp_for(dtls, tx=True) is tx
    assert tx.session is dtls._tx_srtp
    dtls._rx_srtp = None
    assert fast_srtp_for(dtls, tx=False) is None


def test_tap_unavailable_without_aiortc_internals() -> None:
    assert ReceiveTap.for_transport(object()) is None


class _UdpProtocol(asyncio.DatagramProtocol):
    """An aioice ``StunProtocol`` stand-in: keeps its transport, records datagrams."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.slow: list[bytes] = []
        self.errors: list[Exception] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.slow.append(data)

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


async def _udp_transport() -> tuple[Any, _UdpProtocol, _Dtls]:
    """A real loopback UDP endpoint as the only socket of a stand-in DTLS transport."""
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        _UdpProtocol, local_addr=("127.0.0.1", 0))
    dtls = _Dtls()
    dtls.protocols[:] = [protocol]
    return transport, protocol, dtls


async def _until(predicate: Any, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_receive_tap_reads_the_socket_itself() -> None:
    transport, protocol, dtls = await _udp_transport()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    address = transport.get_extra_info("sockname")
    try:
        tap = ReceiveTap.for_transport(dtls)
        assert tap is not None
        got: list[bytes] = []
        tap.add_route(0xAAAA, lambda buf, n: got.append(bytes(buf[:n])))
        assert tap.reads_sockets and "datagram_received" not in vars(protocol)
        batcher = tap.batcher  # one epoll reader for the loop's tapped sockets (Linux)
        assert (batcher is not None) == hasattr(select, "epoll")
        sender = _session(True)
        packets = [_rtp(0xAAAA, s, os.urandom(40 + s)) for s in range(3)]
        for p in packets:
            peer.sendto(sender.protect(p), address)
        await _until(lambda: len(got) == 3)
        assert got == packets and protocol.slow == []
        assert dtls._RTCDtlsTransport__rx_packets == 3
        # everything else reaches the protocol byte for byte, with the sender's address
        other = sender.protect(_rtp(0xBBBB, 1))
        rtcp = bytes([0x81, 201, 0, 1]) + bytes(8)
        big = bytes([0x16]) + os.urandom(3000)  # DTLS-like, larger than any RTP buffer
        for d in (other, rtcp, big):
            peer.sendto(d, address)
        await _until(lambda: len(protocol.slow) == 3)
        assert protocol.slow == [other, rtcp, big]
        # a tampered packet of a routed SSRC is dropped
        bad = bytearray(sender.protect(_rtp(0xAAAA, 7)))
        bad[-1] ^= 0xFF
        peer.sendto(bytes(bad), address)
        peer.sendto(sender.protect(_rtp(0xAAAA, 8)), address)
        await _until(lambda: len(got) == 4)
        assert got[-1] == _rtp(0xAAAA, 8) and len(protocol.slow) == 3
        # without routes asyncio's own reader is back
        tap.remove_route(0xAAAA)
        assert not tap.reads_sockets
        late = sender.protect(_rtp(0xAAAA, 9))
        peer.sendto(late, address)
        await _until(lambda: len(protocol.slow) == 4)
        assert protocol.slow[-1] == late and len(got) == 4
        # a transport closed while tapped is left closed
        tap.add_route(0xAAAA, lambda buf, n: got.append(bytes(buf[:n])))
        transport.close()
        tap.remove_route(0xAAAA)
        await asyncio.sleep(0)
        # ... also when a datagram comes between close() and the socket's end
        transport, protocol, dtls = await _udp_transport()
        tap = ReceiveTap.for_transport(dtls)
        assert tap is not None
        tap.add_route(0xAAAA, lambda buf, n: got.append(bytes(buf[:n])))
        batcher = tap.batcher
        transport.close()
        tap._on_readable(transport._sock, protocol)
        assert not tap.reads_sockets and tap.batcher is None
        assert batcher is None or batcher.closed  # its only socket left it
    finally:
        peer.close()
        transport.close()


async def test_receive_tap_socket_errors_go_to_the_protocol() -> None:
    transport, protocol, dtls = await _udp_transport()

    class _FailingSocket:
        def __init__(self, exc: OSError) -> None:
            self.exc = exc

        def recvfrom_into(self, buffer: Any) -> Any:
            raise self.exc

    try:
        tap = ReceiveTap.for_transport(dtls)
        assert tap is not None
        tap.add_route(1, lambda buf, n: None)
        assert tap.reads_sockets
        tap._on_readable(_FailingSocket(BlockingIOError()), protocol)  # spurious wake-up
        assert protocol.errors == []
        refused = ConnectionRefusedError(111, "refused")
        tap._on_readable(_FailingSocket(refused), protocol)  # as asyncio's reader does
        assert protocol.errors == [refused] and protocol.slow == []
    finally:
        transport.close()


class _Recipient:
    """An aiortc RTP sender/receiver stand-in: records RTCP and the task it ran in."""

    def __init__(self, wait: float = 0.0) -> None:
        self.wait = wait
        self.got: list[tuple[Any, Any]] = []

    async def _handle_rtcp_packet(self, packet: Any) -> None:
        if self.wait:
            await asyncio.sleep(self.wait)
        self.got.append((packet, asyncio.current_task()))


class _Router:
    def __init__(self, recipients: dict[int, _Recipient]) -> None:
        self.recipients = recipients

    def route_rtcp(self, packet: Any) -> set[_Recipient]:
        ssrcs = [r.ssrc for r in getattr(packet, "reports", [])]
        ssrcs.append(getattr(packet, "media_ssrc", None))
        return {self.recipients[s] for s in ssrcs if s in self.recipients}


async def test_receive_tap_handles_rtcp_without_the_transport_task() -> None:
    from aiortc.rtp import (
        RTCP_PSFB_PLI,
        RtcpPacket,
        RtcpPsfbPacket,
        RtcpReceiverInfo,
        RtcpRrPacket,
        RtcpSdesPacket,
        RtcpSourceInfo,
    )

    transport, protocol, dtls = await _udp_transport()
    plain, waiting = _Recipient(), _Recipient(wait=0.01)
    dtls._rtp_router = _Router({0x51: plain, 0x52: waiting})
    rtcp_data: list[bytes] = []

    async def handle_rtcp_data(data: bytes) -> None:  # aiortc's own RTCP coroutine
        rtcp_data.append(data)
        for packet in RtcpPacket.parse(data):
            for recipient in dtls._rtp_router.route_rtcp(packet):
                await recipient._handle_rtcp_packet(packet)

    dtls._handle_rtcp_data = handle_rtcp_data
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    address = transport.get_extra_info("sockname")
    sender = _session(True)

    def report(ssrc: int) -> bytes:
        return bytes(RtcpRrPacket(ssrc=0x99, reports=[RtcpReceiverInfo(
            ssrc=ssrc, fraction_lost=0, packets_lost=2, highest_sequence=100, jitter=3,
            lsr=0, dlsr=0)]))

    sdes = bytes(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=0x99, items=[(1, b"cname")])]))
    try:
        tap = ReceiveTap.for_transport(dtls)
        assert tap is not None and tap.take_rtcp()
        # reports: the recipient's handler runs right away, outside any task
        peer.sendto(sender.protect_rtcp(report(0x51) + sdes), address)
        await _until(lambda: len(plain.got) == 1)
        packet, task = plain.got[0]
        assert isinstance(packet, RtcpRrPacket) and packet.reports[0].packets_lost == 2
        assert task is None and rtcp_data == [] and protocol.slow == []
        # a handler that waits after all is finished by a task
        peer.sendto(sender.protect_rtcp(report(0x52)), address)
        await _until(lambda: len(waiting.got) == 1)
        assert waiting.got[0][1] is not None
        # feedback (here a PLI after a report) goes to aiortc's coroutine in a task
        pli = bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=0x99, media_ssrc=0x51))
        peer.sendto(sender.protect_rtcp(report(0x51) + pli), address)
        await _until(lambda: len(plain.got) == 3)
        assert rtcp_data == [report(0x51) + pli]
        assert [type(p) for p, _ in plain.got[1:]] == [RtcpRrPacket, RtcpPsfbPacket]
        assert all(t is not None for _, t in plain.got[1:])
        assert tap.rtcp_packets == 3 and protocol.slow == []
        # RTCP that fails authentication is dropped; plain RTP of no route passes on
        bad = bytearray(sender.protect_rtcp(report(0x51)))
        bad[-1] ^= 1
        peer.sendto(bytes(bad), address)
        rtp = sender.protect(_rtp(0xCC, 1))
        peer.sendto(rtp, address)
        await _until(lambda: protocol.slow == [rtp])
        assert tap.rtcp_packets == 3 and len(plain.got) == 3
        # routes gone, the tap still reads: RTCP stays with it
        assert tap.reads_sockets
    finally:
        peer.close()
        transport.close()


def test_receive_tap_does_not_keep_its_transport_alive() -> None:
    """The tap is the value of a WeakKeyDictionary keyed by its transport: it must not
    hold the transport strongly (every closed PC of a server stayed in memory)."""
    import gc
    import weakref

    dtls = _Dtls()
    tap = ReceiveTap.for_transport(dtls)
    assert tap is not None
    tap.add_route(0xAAAA, lambda buf, n: None)
    ref = weakref.ref(dtls)
    del dtls, tap
    gc.collect()
    assert ref() is None
