"""Consent freshness (engine/consent.py) and the STUN bytes it sends and accepts."""

from __future__ import annotations

import os

from aioice import stun

from aiolivekit.webrtc.consent import ConsentSchedule
from aiolivekit.webrtc.stun_keepalive import binding_response_ok, seal_message

KEY = b"remote-password-0123"


def test_schedule_randomised_interval_and_early_send() -> None:
    values = iter([0.0, 1.0, 0.5])
    s = ConsentSchedule(100.0, interval=5.0, early=2.0, expiry=30.0, rng=lambda: next(values))
    assert s.due == 104.0  # 0.8 x 5 s
    assert not s.should_send(101.9, awake=True)
    assert s.should_send(102.0, awake=True)  # awake anyway: up to 2 s early
    assert not s.should_send(103.9, awake=False) and s.should_send(104.0, awake=False)
    s.sent(102.0, b"T" * 12)
    assert s.due == 108.0 and s.pending == b"T" * 12  # 1.2 x 5 s later
    assert not s.response(102.1, b"X" * 12)  # not ours
    assert s.response(102.1, b"T" * 12) and s.pending is None and s.last_ok == 102.1
    assert not s.response(102.2, b"T" * 12)  # a duplicate answer is not counted twice
    assert (s.sent_count, s.ok_count) == (1, 1)


def test_schedule_expires_only_without_responses() -> None:
    s = ConsentSchedule(0.0, expiry=30.0, rng=lambda: 0.5)
    for t in range(5, 30, 5):
        s.sent(float(t), bytes([t]) * 12)
    assert not s.expired(29.9) and s.expired(30.0)
    s.sent(30.0, b"A" * 12)
    s.response(30.1, b"A" * 12)
    assert not s.expired(59.0) and s.expired(60.1)


def test_sealed_request_is_valid_for_aioice() -> None:
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = "remote:local"
    request.attributes["PRIORITY"] = 1853824767
    request.attributes["ICE-CONTROLLED"] = 0x1122334455667788
    tid = os.urandom(12)
    data = seal_message(0x0001, tid, bytes(request)[20:], KEY)
    parsed = stun.parse_message(data)
    assert parsed.check_message_integrity(KEY)  # (parse_message checks FINGERPRINT)
    assert parsed.transaction_id == tid
    assert parsed.attributes["USERNAME"] == "remote:local"
    assert parsed.attributes["ICE-CONTROLLED"] == 0x1122334455667788
    # the same as aioice's own encoding of that message
    same = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST,
                        transaction_id=tid, attributes=dict(request.attributes))
    same.add_message_integrity(KEY)
    same.add_fingerprint()
    assert data == bytes(same)


def _aioice_response(tid: bytes, key: bytes) -> bytes:
    response = stun.Message(message_method=stun.Method.BINDING,
                            message_class=stun.Class.RESPONSE, transaction_id=tid)
    response.attributes["XOR-MAPPED-ADDRESS"] = ("10.203.0.1", 50000)
    response.add_message_integrity(key)
    response.add_fingerprint()
    return bytes(response)


def test_response_check_accepts_only_authentic_answers() -> None:
    tid = os.urandom(12)
    good = _aioice_response(tid, KEY)
    assert binding_response_ok(good, tid, KEY)
    assert not binding_response_ok(good, os.urandom(12), KEY)  # another transaction
    assert not binding_response_ok(_aioice_response(tid, b"other-key"), tid, KEY)
    tampered = bytearray(good)
    tampered[30] ^= 1  # inside XOR-MAPPED-ADDRESS
    assert not binding_response_ok(bytes(tampered), tid, KEY)
    assert not binding_response_ok(good[:-4], tid, KEY)  # truncated
    request = seal_message(0x0001, tid, b"", KEY)
    assert not binding_response_ok(request, tid, KEY)  # a request, not a response


async def test_consent_keeper_does_not_keep_its_connection_alive() -> None:
    """Keepers live in a WeakKeyDictionary keyed by the aioice connection: the keeper must
    not hold it strongly, or no closed connection (sockets, PC) is ever freed."""
    import asyncio
    import gc
    import weakref

    from aiolivekit.webrtc import consent

    class _Conn:
        remote_password = "pw"

    loop = asyncio.get_running_loop()
    conn = _Conn()
    keeper = consent.ConsentKeeper(conn, loop, b"", ConsentSchedule(loop.time()))
    consent._keepers[conn] = keeper
    ref = weakref.ref(conn)
    del conn
    gc.collect()
    assert ref() is None
    assert not keeper.rekey()
    keeper._check()  # the connection is gone: the keeper stops
    assert keeper.stopped


async def test_checks_after_an_ice_restart_go_out_at_once_until_answered() -> None:
    import asyncio

    from aiolivekit.webrtc import consent

    class _Conn:
        remote_password = "pw"

    loop = asyncio.get_running_loop()
    conn = _Conn()
    keeper = consent.ConsentKeeper(conn, loop, b"", ConsentSchedule(loop.time()))
    sent: list[float] = []
    keeper._check = lambda: sent.append(loop.time())  # type: ignore[method-assign]
    start = loop.time()
    keeper.checks_after_restart()
    await asyncio.sleep(0.2)
    assert len(sent) == 2 and sent[0] - start < 0.05  # at once, then 0.1 s later
    keeper.schedule.last_ok = loop.time()  # answered: no more restart checks
    await asyncio.sleep(max(consent.RESTART_CHECKS) + 0.1)
    assert len(sent) == 2
    keeper.stop()
