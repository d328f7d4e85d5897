"""The keepalive answerer produces exactly what aioice would send, and refuses the rest."""

from __future__ import annotations

import aioice.stun as stun
import pytest

from aiolivekit.webrtc.stun_keepalive import answer_binding_request, parse_binding_request

KEY = b"local-password-0123456789"


def _request(**attributes: object) -> stun.Message:
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    message.attributes["USERNAME"] = "local:remote"
    message.attributes["PRIORITY"] = 1853824767
    for name, value in attributes.items():
        message.attributes[name.replace("_", "-")] = value
    message.add_message_integrity(KEY)
    return message


@pytest.mark.parametrize("addr", [("127.0.0.1", 50000), ("10.203.0.1", 1), ("::1", 65535)])
def test_answer_is_byte_identical_to_aioice(addr: tuple[str, int]) -> None:
    request = _request(ICE_CONTROLLING=42)
    parsed = parse_binding_request(bytes(request), KEY)
    assert parsed is not None and parsed.integrity_ok
    expected = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE,
                            transaction_id=request.transaction_id)
    expected.attributes["XOR-MAPPED-ADDRESS"] = addr
    expected.add_message_integrity(KEY)
    answer = answer_binding_request(parsed, addr, KEY)
    assert answer == bytes(expected)
    back = stun.parse_message(answer)
    assert back.check_message_integrity(KEY)
    assert back.attributes["XOR-MAPPED-ADDRESS"] == addr
    assert back.transaction_id == request.transaction_id


def test_parse_reads_username_and_role_flags() -> None:
    parsed = parse_binding_request(bytes(_request(ICE_CONTROLLED=7, USE_CANDIDATE=None)), KEY)
    assert parsed is not None
    assert parsed.username == "local:remote"
    assert (parsed.use_candidate, parsed.controlling, parsed.controlled) == (True, False, True)


def test_wrong_password_fails_integrity() -> None:
    parsed = parse_binding_request(bytes(_request()), b"other-password")
    assert parsed is not None and not parsed.integrity_ok


def test_tampered_request_fails_integrity() -> None:
    data = bytearray(bytes(_request()))
    data[30] ^= 0x01  # inside USERNAME
    parsed = parse_binding_request(bytes(data), KEY)
    assert parsed is None or not parsed.integrity_ok


def test_other_messages_are_not_answered() -> None:
    response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE)
    response.attributes["XOR-MAPPED-ADDRESS"] = ("127.0.0.1", 1)
    response.add_message_integrity(KEY)
    assert parse_binding_request(bytes(response), KEY) is None
    assert parse_binding_request(b"\x80\x6f" + bytes(30), KEY) is None  # RTP-like
    assert parse_binding_request(b"", KEY) is None
    data = bytes(_request())
    assert parse_binding_request(data[:-3], KEY) is None  # truncated
    assert parse_binding_request(data[:20], KEY) is None  # header only: no USERNAME


def test_attribute_after_integrity_other_than_fingerprint_is_refused() -> None:
    data = bytes(_request())[:-8]  # drop FINGERPRINT
    extra = b"\x80\x22\x00\x04abcd"  # SOFTWARE after MESSAGE-INTEGRITY
    body_length = len(data) - 20 + len(extra)
    forged = data[:2] + body_length.to_bytes(2, "big") + data[4:] + extra
    assert parse_binding_request(forged, KEY) is None
