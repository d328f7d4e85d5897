"""DataPacket codec: sequencing, size limits, decoding, duplicate filter."""

from __future__ import annotations

import pytest
from livekit.protocol import models as models_pb

from aiolivekit.data import packets
from aiolivekit.errors import PublishDataError


def test_reliable_packets_get_increasing_sequence_lossy_none() -> None:
    enc = packets.PacketEncoder(identity="alice", sid="PA_a")
    seqs = []
    for i in range(3):
        data = enc.encode(enc.user_packet(b"x%d" % i, topic="t"), reliable=True)
        p = packets.decode_packet(data)
        seqs.append(p.sequence)
        assert p.participant_identity == "alice" and p.participant_sid == "PA_a"
        assert p.user.payload == b"x%d" % i and p.user.topic == "t"
        assert p.kind == models_pb.DataPacket.RELIABLE
    assert seqs == [1, 2, 3]
    lossy = packets.decode_packet(enc.encode(enc.user_packet(b"l"), reliable=False))
    assert lossy.sequence == 0 and lossy.kind == models_pb.DataPacket.LOSSY
    assert not lossy.user.HasField("topic")
    nxt = packets.decode_packet(enc.encode(enc.user_packet(b"y"), reliable=True))
    assert nxt.sequence == 4


def test_destination_identities_in_both_places() -> None:
    enc = packets.PacketEncoder(identity="a", sid="PA_a")
    p = packets.decode_packet(enc.encode(enc.user_packet(b"x", destination_identities=["b", "c"]),
                                         reliable=True))
    assert list(p.destination_identities) == ["b", "c"]
    assert list(p.user.destination_identities) == ["b", "c"]


def test_size_limits_refuse_before_sending_and_keep_sequence() -> None:
    enc = packets.PacketEncoder(identity="a", sid="PA_a")
    with pytest.raises(PublishDataError, match="lossy"):
        enc.encode(enc.user_packet(b"x" * (15 * 1024)), reliable=False)
    enc.encode(enc.user_packet(b"x" * 15000), reliable=False)
    with pytest.raises(PublishDataError, match="reliable"):
        enc.encode(enc.user_packet(b"x" * 70000), reliable=True, reliable_max=65536)
    # a refused packet does not consume a sequence number
    p = packets.decode_packet(enc.encode(enc.user_packet(b"ok"), reliable=True))
    assert p.sequence == 1
    big = enc.encode(enc.user_packet(b"x" * 100000), reliable=True, reliable_max=262144)
    assert len(big) > 100000


def test_decode_garbage_raises_value_error() -> None:
    with pytest.raises(ValueError):
        packets.decode_packet(b"\xff\xff\xff\xff")


def test_duplicate_filter() -> None:
    f = packets.DuplicateFilter()

    def pkt(sid: str, seq: int) -> models_pb.DataPacket:
        return models_pb.DataPacket(participant_sid=sid, sequence=seq)

    assert f.accept(pkt("PA_a", 1))
    assert f.accept(pkt("PA_a", 2))
    assert not f.accept(pkt("PA_a", 2))
    assert not f.accept(pkt("PA_a", 1))
    assert f.accept(pkt("PA_b", 1))  # per sender
    assert f.accept(pkt("PA_a", 0))  # unsequenced (server API) always passes
    assert f.accept(pkt("", 5)) and f.accept(pkt("", 5))
    assert f.accept(pkt("PA_a", 2), reliable=False)  # lossy never filtered
    f.forget("PA_a")
    assert f.accept(pkt("PA_a", 1))


def _from(identity: str, sid: str, seq: int) -> models_pb.DataPacket:
    return models_pb.DataPacket(participant_identity=identity, participant_sid=sid,
                                sequence=seq)


def test_duplicate_filter_carries_a_continued_numbering_to_the_new_sid() -> None:
    """A sender reconnected in full (new sid) goes on numbering and sends again what the
    old server had not acknowledged: what arrived before is dropped, the rest passes."""
    f = packets.DuplicateFilter()
    for seq in range(1, 11):
        assert f.accept(_from("alice", "PA_old", seq), now=100.0)
    resent = [f.accept(_from("alice", "PA_new", seq), now=103.0) for seq in range(8, 14)]
    assert resent == [False, False, False, True, True, True]  # 8..10 seen under PA_old
    assert not f.accept(_from("alice", "PA_new", 12), now=103.1)
    assert f.accept(_from("alice", "PA_new", 14), now=103.2)


def test_duplicate_filter_new_session_starting_at_one_is_fresh() -> None:
    """A new session of the official SDKs numbers from 1 again: nothing is dropped."""
    f = packets.DuplicateFilter()
    for seq in range(1, 6):
        assert f.accept(_from("bob", "PA_1", seq), now=10.0)
    assert [f.accept(_from("bob", "PA_2", s), now=11.0) for s in range(1, 7)] == [True] * 6


def test_duplicate_filter_carry_over_only_within_the_window() -> None:
    f = packets.DuplicateFilter()
    assert f.accept(_from("carol", "PA_1", 40), now=0.0)
    late = packets.CONTINUATION_WINDOW + 1.0
    assert f.accept(_from("carol", "PA_2", 30), now=late)  # long after: a new sender
    g = packets.DuplicateFilter()
    assert g.accept(_from("carol", "PA_1", 40), now=0.0)
    assert not g.accept(_from("carol", "PA_2", 30), now=5.0)
    assert g.accept(_from("dave", "PA_3", 30), now=5.0)  # another identity: unaffected


def test_duplicate_filter_identities_are_bounded() -> None:
    f = packets.DuplicateFilter()
    for i in range(packets.MAX_IDENTITIES + 10):
        f.accept(_from(f"id{i}", f"PA_{i}", 1), now=0.0)
    assert len(f.identities) == packets.MAX_IDENTITIES
    assert "id0" not in f.identities and f"id{packets.MAX_IDENTITIES + 9}" in f.identities


def test_resend_buffer_last() -> None:
    buf = packets.ResendBuffer()
    for seq in range(1, 6):
        buf.add(seq, bytes([seq]))
    assert buf.last(2) == [(4, b"\x04"), (5, b"\x05")]
    assert buf.last(0) == [] and buf.last(-1) == []
    assert [s for s, _ in buf.last(99)] == [1, 2, 3, 4, 5]
