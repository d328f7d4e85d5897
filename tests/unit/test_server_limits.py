"""The sans-I/O limits of issue 14: livekit-server's participant caps, AddTrack bounds,
max_participants, empty_timeout from the creation, Twirp pre-authorisation, the byte-
bounded signal queue, the SCTP reassembly bound, key sources of ``serve``."""

from __future__ import annotations

import asyncio
import os
import resource
import stat
from typing import Any

import pytest
from livekit.protocol import models as models_pb, rtc as rtc_pb

from aiolivekit._compat.aiortc_sctp import limit_sctp_message_size
from aiolivekit.server import limits
from aiolivekit.server.auth import VideoGrant
from aiolivekit.server.conn_guard import ConnectionGuard, default_max_connections
from aiolivekit.server.keys import (
    KeyConfigError,
    is_loopback_bind,
    parse_key_text,
    resolve_keys,
    short_secrets,
)
from aiolivekit.server.rooms import RoomManager, RoomState, SendSignal
from aiolivekit.server.twirp import RoomService

NOW = 1_800_000_000.0


def join(room: RoomState, identity: str) -> Any:
    g = VideoGrant(room_join=True, room="r", can_update_own_metadata=True)
    return room.join(identity, g, NOW, name=identity.title())


def signals(effects: list[Any], sid: str, kind: str) -> list[rtc_pb.SignalResponse]:
    return [e.response for e in effects
            if isinstance(e, SendSignal) and e.participant_sid == sid
            and e.response.WhichOneof("message") == kind]


def bearer(video: dict[str, Any]) -> str:
    import warnings

    import jwt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = jwt.encode({"iss": "devkey", "sub": "", "exp": NOW + 600, "nbf": NOW - 1,
                          "video": video}, "secret", algorithm="HS256")
    return "Bearer " + tok


def test_participant_field_limits_are_livekit_servers() -> None:
    assert (limits.MAX_METADATA_SIZE, limits.MAX_ATTRIBUTES_SIZE, limits.MAX_NAME_LENGTH) == \
        (512 * 1024, 64 * 1024, 256)
    limits.check_participant_fields(name="n" * 256, metadata="m" * 512 * 1024,
                                    attributes={"k" * 10: "v" * (64 * 1024 - 10)})
    for kw, field in (({"name": "n" * 257}, "name"), ({"name": "é" * 129}, "name"),
                      ({"metadata": "m" * (512 * 1024 + 1)}, "metadata"),
                      ({"attributes": {"k": "v" * 64 * 1024}}, "attributes")):
        with pytest.raises(limits.LimitExceeded) as info:
            limits.check_participant_fields(**kw)  # type: ignore[arg-type]
        assert info.value.field == field
    assert limits.check_join("a" * 257, "r") == \
        "participant identity exceeds limits: max length 256"
    assert limits.check_join("a", "r" * 257) == "room name exceeds limits: max length 256"
    assert limits.check_join("a", "r", metadata="m" * (512 * 1024 + 1)) == \
        "metadata size exceeds limits"
    assert limits.check_join("a", "r", metadata="m") is None


def test_room_full_counts_other_identities() -> None:
    assert not limits.room_full(0, ["a"] * 100, "b")
    assert limits.room_full(2, ["a", "b"], "c")
    assert not limits.room_full(2, ["a", "b"], "b")  # a rejoin replaces itself
    assert not limits.room_full(3, ["a", "b"], "c")


def test_update_metadata_over_limits_is_limit_exceeded() -> None:
    room = RoomState("r", NOW)
    p, _, _ = join(room, "alice")
    for req, message in (
            (rtc_pb.UpdateParticipantMetadata(metadata="m" * (512 * 1024 + 1), request_id=1),
             "exceeds metadata size limit"),
            (rtc_pb.UpdateParticipantMetadata(name="n" * 257, request_id=2),
             "exceeds name length limit"),
            (rtc_pb.UpdateParticipantMetadata(attributes={"k": "v" * 65536}, request_id=3),
             "exceeds attributes size limit")):
        effects = room.update_metadata(p.sid, req)
        (resp,) = signals(effects, p.sid, "request_response")
        rr = resp.request_response
        assert (rr.reason, rr.message, rr.request_id) == (
            rtc_pb.RequestResponse.Reason.LIMIT_EXCEEDED, message, req.request_id)
        assert len(effects) == 1  # nothing fanned out
    assert p.metadata == "" and p.name == "Alice" and p.attributes == {}


def test_add_track_bounds() -> None:
    room = RoomState("r", NOW)
    p, _, _ = join(room, "alice")
    big = rtc_pb.AddTrackRequest(
        cid="c", type=models_pb.TrackType.VIDEO, source=models_pb.TrackSource.CAMERA,
        layers=[models_pb.VideoLayer(quality=models_pb.VideoQuality.LOW)] * 5)
    (resp,) = signals(room.add_track(p.sid, big, NOW), p.sid, "request_response")
    assert resp.request_response.reason == rtc_pb.RequestResponse.Reason.LIMIT_EXCEEDED
    assert resp.request_response.message == "too many layers (5 > 4)"
    codecs = rtc_pb.AddTrackRequest(
        cid="c", type=models_pb.TrackType.VIDEO, source=models_pb.TrackSource.CAMERA,
        simulcast_codecs=[rtc_pb.SimulcastCodec(codec="vp8")] * 5)
    (resp,) = signals(room.add_track(p.sid, codecs, NOW), p.sid, "request_response")
    assert resp.request_response.message == "too many codecs (5 > 4)"
    assert limits.check_add_track(rtc_pb.AddTrackRequest(name="x" * 257)) is not None
    assert p.tracks == {}


def test_empty_timeout_counts_from_creation() -> None:
    mgr = RoomManager()
    mgr.get_or_create("never", NOW, empty_timeout=3)
    assert mgr.prune(NOW + 2.9) == []
    assert mgr.prune(NOW + 3.0) == ["never"]  # the first check after the timeout closes it


def test_twirp_preauthorize_before_the_body() -> None:
    svc = RoomService(RoomManager(), {"devkey": "secret"})
    join_only = bearer({"roomJoin": True, "room": "r"})
    for method in ("CreateRoom", "ListRooms", "UpdateParticipant", "DeleteRoom"):
        result = svc.preauthorize(method, join_only, NOW)
        assert result is not None and result.status == 401
    assert svc.preauthorize("CreateRoom", bearer({"roomCreate": True}), NOW) is None
    assert svc.preauthorize("ListRooms", bearer({"roomList": True}), NOW) is None
    assert svc.preauthorize("UpdateParticipant",
                            bearer({"roomAdmin": True, "room": "r"}), NOW) is None
    assert svc.preauthorize("CreateRoom", "Bearer garbage", NOW).status == 401  # type: ignore[union-attr]
    assert svc.preauthorize("CreateRoom", None, NOW).status == 401  # type: ignore[union-attr]
    assert svc.preauthorize("NoSuchMethod", join_only, NOW) is None  # handle(): bad_route


async def test_signal_queue_is_bounded_in_bytes() -> None:
    calls: list[int] = []
    q = limits.SignalQueue(lambda: calls.append(1), max_bytes=1000)
    q.put_nowait(b"a" * 400)
    q.put_nowait("b" * 400)
    assert q.queued_bytes == 800
    assert q.get_nowait() == b"a" * 400 and q.queued_bytes == 400
    q.put_nowait(b"c" * 700)  # 1100 > 1000: overflow, everything dropped
    await asyncio.sleep(0)
    assert calls == [1] and q.qsize() == 0 and q.overflowed
    q.put_nowait(b"late")  # refused after the overflow
    q.put_nowait(None)  # the writer's end marker still goes in
    assert q.qsize() == 1 and await q.get() is None
    await asyncio.sleep(0)
    assert calls == [1]


class _Chunk:
    def __init__(self, tsn: int, flags: int, size: int, stream_id: int = 1) -> None:
        self.tsn, self.flags, self.stream_id = tsn, flags, stream_id
        self.user_data = b"x" * size


class _Stream:
    def __init__(self) -> None:
        self.reassembly: list[_Chunk] = []


class _FakeSctp:
    """What the guard reads of aiortc's RTCSctpTransport."""

    def __init__(self) -> None:
        self._inbound_streams: dict[int, _Stream] = {1: _Stream()}
        self.received: list[int] = []

    async def _receive_data_chunk(self, chunk: _Chunk) -> None:
        self.received.append(chunk.tsn)
        if not chunk.flags & 0x01:
            self._inbound_streams[1].reassembly.append(chunk)
        else:
            self._inbound_streams[1].reassembly.clear()


async def test_sctp_message_size_guard() -> None:
    sctp = _FakeSctp()
    exceeded: list[int] = []
    limit_sctp_message_size(sctp, 3000, exceeded.append)
    # a 2 500-byte message in three fragments passes
    for tsn, flags in ((1, 0x02), (2, 0x00), (3, 0x01)):
        await sctp._receive_data_chunk(_Chunk(tsn, flags, 1000 if tsn < 3 else 500))
    assert sctp.received == [1, 2, 3] and exceeded == []
    # a message growing past 3 000 bytes is refused at its fourth fragment
    for tsn in range(4, 10):
        await sctp._receive_data_chunk(_Chunk(tsn, 0x02 if tsn == 4 else 0x00, 1000))
    assert sctp.received == [1, 2, 3, 4, 5, 6] and exceeded == [4000]
    await sctp._receive_data_chunk(_Chunk(10, 0x03, 10))  # dropped: the session is ending
    assert sctp.received[-1] == 6


def test_sctp_guard_holds_no_strong_reference() -> None:
    import weakref

    sctp = _FakeSctp()

    class Owner:
        def on_exceed(self, size: int) -> None:
            pass

    owner = Owner()
    limit_sctp_message_size(sctp, 3000, owner.on_exceed)
    ref = weakref.ref(owner)
    del owner
    assert ref() is None


def test_connection_cap_from_the_fd_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert default_max_connections() == max(8, (soft - 64) // 6)
    guard = ConnectionGuard(lambda: None, max_connections=1)
    guard.open = 1
    assert type(guard()).__name__ == "_Busy" and guard.refused == 1
    with pytest.raises(ValueError):
        ConnectionGuard(lambda: None, header_timeout=0)


def test_key_sources(tmp_path: Any) -> None:
    long = "s" * 32
    assert parse_key_text(f"a: {long}\n# comment\nb:'{long}'") == {"a": long, "b": long}
    assert parse_key_text("k1:s1,k2:s2") == {"k1": "s1", "k2": "s2"}
    with pytest.raises(ValueError, match="key:secret"):
        parse_key_text("nocolon")
    env = {"LIVEKIT_KEYS": f"e: {long}", "LIVEKIT_API_KEY": "x", "LIVEKIT_API_SECRET": long}
    pick = dict(key_file=None, dev=False, bind="127.0.0.1", insecure_dev_keys=False)
    assert resolve_keys(keys_arg=f"c:{long}", environ=env, **pick).keys == {"c": long}  # type: ignore[arg-type]
    assert resolve_keys(keys_arg=None, environ=env, **pick).origin == "LIVEKIT_KEYS"  # type: ignore[arg-type]
    env.pop("LIVEKIT_KEYS")
    assert resolve_keys(keys_arg=None, environ=env, **pick).keys == {"x": long}  # type: ignore[arg-type]
    with pytest.raises(KeyConfigError, match="no API keys"):
        resolve_keys(keys_arg=None, environ={}, **pick)  # type: ignore[arg-type]
    dev = resolve_keys(keys_arg=None, key_file=None, dev=True, bind="::1",
                       insecure_dev_keys=False, environ={})
    assert dev.dev and dev.keys == {"devkey": "secret"}
    with pytest.raises(KeyConfigError, match="only served on loopback"):
        resolve_keys(keys_arg=None, key_file=None, dev=True, bind="0.0.0.0",
                     insecure_dev_keys=False, environ={})
    path = tmp_path / "keys"
    path.write_text(f"f: {long}\n")
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    assert resolve_keys(keys_arg=None, key_file=str(path), dev=False, bind="0.0.0.0",
                        insecure_dev_keys=False, environ={}).keys == {"f": long}
    os.chmod(path, 0o604)
    with pytest.raises(KeyConfigError, match="accessible by others"):
        resolve_keys(keys_arg=None, key_file=str(path), dev=False, bind="0.0.0.0",
                     insecure_dev_keys=False, environ={})
    assert short_secrets({"a": "x" * 31, "b": "x" * 32}) == ["a"]
    assert [is_loopback_bind(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost",
                                          "0.0.0.0", "::", "10.0.0.1", "example.com")] == \
        [True, True, True, True, False, False, False, False]


