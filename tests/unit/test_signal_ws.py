"""The sans-I/O WebSocket codec and URL/query building of the signal transport."""

from __future__ import annotations

import struct
from urllib.parse import parse_qs, urlparse

import pytest

from aiolivekit.engine import ws
from aiolivekit.errors import ConnectError


def test_rtc_url_and_validate_url() -> None:
    q = {"a": "1"}
    assert ws.rtc_url("ws://h:7880", q) == "ws://h:7880/rtc?a=1"
    assert ws.rtc_url("http://h:7880/prefix/", q) == "ws://h:7880/prefix/rtc?a=1"
    assert ws.rtc_url("https://h", q) == "wss://h/rtc?a=1"
    assert ws.rtc_url("wss://h/x", q, validate=True) == "https://h/x/rtc/validate?a=1"
    with pytest.raises(ConnectError):
        ws.rtc_url("ftp://h", q)
    with pytest.raises(ConnectError):
        ws.rtc_url("not a url", q)


def test_signal_query_fields() -> None:
    from aiolivekit.data.manager import CLIENT_CAPABILITIES, CLIENT_PROTOCOL

    q = ws.signal_query("TOKEN", auto_subscribe=False, client_protocol=CLIENT_PROTOCOL,
                        capabilities=CLIENT_CAPABILITIES)
    assert q["access_token"] == "TOKEN" and q["sdk"] == "python" and q["protocol"] == "16"
    assert q["auto_subscribe"] == "0" and q["adaptive_stream"] == "0"
    assert q["client_protocol"] == str(CLIENT_PROTOCOL) and CLIENT_PROTOCOL >= 1
    assert q["capabilities"] == "CAP_COMPRESSION_DEFLATE_RAW"
    assert "capabilities" not in ws.signal_query("t", auto_subscribe=False)
    url = ws.rtc_url("ws://h", q)
    parsed = parse_qs(urlparse(url).query)
    assert parsed["access_token"] == ["TOKEN"]
    assert ws.signal_query("t", auto_subscribe=True)["auto_subscribe"] == "1"


def test_accept_key_rfc_example() -> None:
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_request_and_response_head() -> None:
    req = ws.handshake_request("h:1", "/rtc?x=1", "KEY", {"Authorization": "Bearer T"})
    text = req.decode()
    assert text.startswith("GET /rtc?x=1 HTTP/1.1\r\nHost: h:1\r\n")
    assert "Sec-WebSocket-Key: KEY\r\n" in text and "Authorization: Bearer T\r\n" in text
    assert text.endswith("\r\n\r\n")
    status, headers = ws.parse_http_head(
        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\nX-A: b: c\r\n\r\n")
    assert status == 401 and headers == {"content-length": "5", "x-a": "b: c"}
    with pytest.raises(ValueError):
        ws.parse_http_head(b"garbage\r\n\r\n")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200000])
def test_frame_roundtrip_sizes_masked(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    frame = ws.encode_frame(ws.OP_BINARY, payload, mask=b"\x01\x02\x03\x04")
    if size:
        assert payload not in frame  # masked on the wire
    parser = ws.FrameParser()
    # byte-by-byte for small frames, in two chunks for large ones
    msgs = []
    if size < 300:
        for i in range(len(frame)):
            msgs += parser.feed(frame[i:i + 1])
    else:
        msgs += parser.feed(frame[:7])
        msgs += parser.feed(frame[7:])
    assert msgs == [(ws.OP_BINARY, payload)]


def test_fragments_and_interleaved_control_frames() -> None:
    def frame(fin: bool, op: int, data: bytes) -> bytes:
        return bytes([(0x80 if fin else 0) | op, len(data)]) + data

    data = (frame(False, ws.OP_BINARY, b"ab") + frame(True, ws.OP_PING, b"p")
            + frame(False, ws.OP_CONT, b"cd") + frame(True, ws.OP_CONT, b"ef")
            + frame(True, ws.OP_CLOSE, struct.pack("!H", 1000)))
    parser = ws.FrameParser()
    assert parser.feed(data) == [(ws.OP_PING, b"p"), (ws.OP_BINARY, b"abcdef"),
                                 (ws.OP_CLOSE, b"\x03\xe8")]


def test_protocol_errors() -> None:
    with pytest.raises(ws.ProtocolError):
        ws.FrameParser().feed(bytes([0x80 | ws.OP_CONT, 1]) + b"x")  # orphan continuation
    with pytest.raises(ws.ProtocolError):
        ws.FrameParser().feed(bytes([0xC2, 0]))  # RSV1 without extension
    with pytest.raises(ws.ProtocolError):
        ws.FrameParser().feed(bytes([0x09, 0]))  # fragmented ping
    with pytest.raises(ws.ProtocolError):
        ws.FrameParser(max_message=10).feed(bytes([0x82, 11]) + b"x" * 11)
    with pytest.raises(ws.ProtocolError):
        ws.FrameParser().feed(bytes([0x83, 0]))  # unknown opcode


def test_endpoint_parsing() -> None:
    assert ws._endpoint("wss://example.org/rtc?x=1") == (
        "example.org", 443, True, "/rtc?x=1", "example.org")
    assert ws._endpoint("ws://127.0.0.1:7880/p/rtc") == (
        "127.0.0.1", 7880, False, "/p/rtc", "127.0.0.1:7880")
    assert ws._endpoint("http://[::1]:9/rtc/validate?a=b")[:4] == ("::1", 9, False,
                                                                   "/rtc/validate?a=b")


async def test_try_send_now_writes_a_frame_unless_a_send_is_in_progress() -> None:
    import asyncio

    from livekit.protocol import rtc as rtc_pb

    received = bytearray()
    got = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(4096):
            received.extend(chunk)
            got.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    transport = ws.SignalTransport(reader, writer)
    try:
        ping = rtc_pb.SignalRequest(ping_req=rtc_pb.Ping(timestamp=1234, rtt=5))
        assert transport.try_send_now(ping)
        await asyncio.wait_for(got.wait(), 5)
        # one masked binary frame carrying exactly the request
        assert received[0] == 0x82 and received[1] & 0x80
        length = received[1] & 0x7F
        mask = bytes(received[2:6])
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(received[6:6 + length]))
        assert rtc_pb.SignalRequest.FromString(payload) == ping
        async with transport._write_lock:  # a send() in progress: keep the order, say no
            assert not transport.try_send_now(ping)
        await transport.close()
        assert not transport.try_send_now(ping)
    finally:
        writer.close()
        server.close()
        await server.wait_closed()
