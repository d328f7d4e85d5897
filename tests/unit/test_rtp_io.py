"""Unit tests for the forwarder's raw SRTP I/O (FastSrtp, ReceiveTap) without a network."""

from __future__ import annotations

import os
import struct
from typing import Any

import pylibsrtp
import pytest
from aiortc.rtcdtlstransport import State

from aiolivekit.server.rtp_io import FastSrtp, ReceiveTap, fast_srtp_for

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
    tap.add_route(0xAAAA, got.append)
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
    tap.remove_route(0xAAAA, got.append)
    assert "datagram_received" not in vars(proto)
    proto.datagram_received(sender.protect(_rtp(0xAAAA, 9)), None)
    assert len(proto.slow) == 2 and len(got) == 3


def test_receive_tap_contains_handler_errors() -> None:
    dtls = _Dtls()
    tap = ReceiveTap.for_transport(dtls)
    assert tap is not None

    def boom(data: bytes) -> None:
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
