from aiortc.rtp import RtpPacket

from aiolivekit.media.jitter import AudioJitterBuffer, attach_listener


def _pkt(seq: int, ts: int, payload: bytes) -> RtpPacket:
    p = RtpPacket(payload_type=111, sequence_number=seq, timestamp=ts)
    p._data = payload  # what aiortc's depayloader stores for the decoder
    return p


def test_each_packet_released_at_once_in_order() -> None:
    jb = AudioJitterBuffer()
    out = [jb.add(_pkt(100 + i, 960 * i, bytes([i]))) for i in range(5)]
    assert [pli for pli, _ in out] == [False] * 5
    assert [f.data for _, f in out] == [bytes([i]) for i in range(5)]
    assert [f.timestamp for _, f in out] == [960 * i for i in range(5)]


def test_late_and_duplicate_packets_dropped_gap_passes() -> None:
    jb = AudioJitterBuffer()
    assert jb.add(_pkt(10, 0, b"a"))[1] is not None
    assert jb.add(_pkt(12, 1920, b"c"))[1].data == b"c"  # gap: 11 missing, released anyway
    assert jb.add(_pkt(11, 960, b"b"))[1] is None  # late
    assert jb.add(_pkt(12, 1920, b"c"))[1] is None  # duplicate
    assert (jb.released, jb.dropped) == (2, 2)


def test_sequence_wraparound_and_resync() -> None:
    jb = AudioJitterBuffer()
    assert jb.add(_pkt(65534, 0, b"x"))[1] is not None
    assert jb.add(_pkt(65535, 960, b"y"))[1] is not None
    assert jb.add(_pkt(0, 1920, b"z"))[1].data == b"z"
    assert jb.add(_pkt(65535, 960, b"y"))[1] is None
    # a publisher restart far behind is a new stream, not a late packet
    assert jb.add(_pkt(20000, 0, b"n"))[1].data == b"n"


def test_packets_decoded_only_while_the_track_has_streams() -> None:
    class _Track:
        def __init__(self) -> None:
            self._streams: list[object] = []

    class _Receiver:
        _RTCRtpReceiver__jitter_buffer = None

    receiver = _Receiver()
    assert not attach_listener(receiver, _Track())  # aiortc's own buffer: decode all
    jb = AudioJitterBuffer()
    receiver._RTCRtpReceiver__jitter_buffer = jb
    track = _Track()
    assert attach_listener(receiver, track) and jb.listener is track
    assert jb.add(_pkt(1, 0, b"a"))[1] is None  # nobody reads: not decoded
    track._streams.append(object())
    assert jb.add(_pkt(2, 960, b"b"))[1].data == b"b"
    assert jb.add(_pkt(1, 0, b"a"))[1] is None  # order is still kept while unheard
    track._streams.clear()
    assert jb.add(_pkt(3, 1920, b"c"))[1] is None
    assert (jb.released, jb.unheard, jb.dropped) == (1, 2, 1)
