"""HTTP/WebSocket guards of the embedded server (issue 14): header and idle timeouts, the
connection cap, a clean 503 instead of EMFILE tracebacks. (livekit-server has no
equivalent row: it is not tested here.)"""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap
import time

import pytest

from aiolivekit.server import DevServer

HALF_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: slow"


async def _half_open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HALF_HEAD)
    await writer.drain()
    return reader, writer


async def _status(port: int, timeout: float = 3.0) -> str:
    """The status line of ``GET /`` ('' if no answer in time or the connection dropped)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port),
                                                timeout)
    except (OSError, asyncio.TimeoutError):
        return ""
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), timeout)
        return line.decode().strip()
    except (OSError, asyncio.TimeoutError):
        return ""
    finally:
        writer.close()


async def _closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(4096), timeout)
    except asyncio.TimeoutError:
        return False
    except OSError:
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 4")


async def test_half_sent_headers_time_out_and_the_cap_answers_503(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with DevServer(port=0, max_connections=20, header_timeout=1.0) as server:
        slow = [await _half_open(server.port) for _ in range(20)]
        start = time.monotonic()
        await asyncio.sleep(0.1)
        assert await _status(server.port) == "HTTP/1.1 503 Service Unavailable"
        closed = await asyncio.gather(*(_closed_by_server(r, 3.0) for r, _ in slow))
        assert all(closed)
        assert time.monotonic() - start < 2.5  # the 1 s header timeout, not never
        for _, w in slow:
            w.close()
        await asyncio.sleep(0.1)
        assert await _status(server.port) == "HTTP/1.1 200 OK"
        assert server.guard is not None
        assert (server.guard.header_timeouts, server.guard.refused) == (20, 1)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == []


async def test_idle_keepalive_connection_is_closed() -> None:
    async with DevServer(port=0, idle_timeout=1.0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 2\r\n" in head
        assert await asyncio.wait_for(reader.readexactly(2), 3) == b"OK"
        start = time.monotonic()
        rest = await asyncio.wait_for(reader.read(), 5)  # EOF when the server closes it
        assert rest == b""
        assert 0.5 < time.monotonic() - start < 3.5
        writer.close()


SERVER_AT_FD_LIMIT = textwrap.dedent("""
    import asyncio, resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    from aiolivekit.server import DevServer

    async def main():
        async with DevServer(port=0, header_timeout=2.0) as server:
            print(server.port, server.guard.max_connections, flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())
""")


async def test_300_half_sent_headers_at_a_256_fd_limit() -> None:
    """The issue's probe: 300 half-sent headers against a server limited to 256 file
    descriptors. Beyond the cap (computed from the limit) each gets a clean 503, nothing
    on stderr (no EMFILE traceback), and health checks answer again once the header
    timeout has closed the others."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER_AT_FD_LIMIT, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
    writers: list[asyncio.StreamWriter] = []
    try:
        port_s, cap_s = (await asyncio.wait_for(proc.stdout.readline(), 20)).split()
        port, cap = int(port_s), int(cap_s)
        assert cap == (256 - 64) // 6
        answers: list[bytes] = []
        for _ in range(300):
            reader, writer = await _half_open(port)
            writers.append(writer)
            try:
                answers.append(await asyncio.wait_for(reader.read(200), 0.02))
            except asyncio.TimeoutError:
                answers.append(b"")  # held: waiting for the rest of its head
        busy = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
        assert len(busy) == 300 - cap and answers.count(b"") == cap
        assert await _status(port) == "HTTP/1.1 503 Service Unavailable"
        for w in writers:
            w.close()
        await asyncio.sleep(2.5)  # the header timeout frees the held ones
        assert await _status(port) == "HTTP/1.1 200 OK"
    finally:
        for w in writers:
            w.close()
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
    err = (await proc.stderr.read()).decode()
    assert "Traceback" not in err and "Too many open files" not in err, err
