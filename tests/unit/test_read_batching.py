"""ReadBatcher: one event-loop reader for many UDP sockets, a poll timer while traffic is
dense, and the batch's sends after its reads (real loopback sockets, real event loop)."""

from __future__ import annotations

import asyncio
import functools
import select
import socket
from typing import Any

import pytest

from aiolivekit.server import read_batching
from aiolivekit.server.read_batching import ReadBatcher, batcher_for

pytestmark = pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll only")

WINDOW = 0.02


class _Endpoint:
    """A non-blocking loopback UDP socket whose reads the batcher drives."""

    def __init__(self, log: list[tuple[str, Any]], name: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self.log = log
        self.name = name
        self.got: list[tuple[bytes, float]] = []  # (datagram, loop time read)

    def read_one(self) -> None:
        try:
            data = self.sock.recv(2048)
        except BlockingIOError:
            return
        self.got.append((data, asyncio.get_running_loop().time()))
        self.log.append(("read", self.name))


async def _until(predicate: Any, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.002)


@pytest.fixture
def peer() -> Any:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield sock
    sock.close()


def _count_ticks(batcher: ReadBatcher) -> list[int]:
    """Counts the batcher's timer ticks (reads not done by the event loop's reader)."""
    ticks = [0]
    tick = batcher._tick

    def counted() -> None:
        ticks[0] += 1
        tick()

    batcher._tick = counted  # type: ignore[method-assign]
    return ticks


async def test_sparse_datagrams_are_read_at_once(peer: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    batcher = ReadBatcher(loop, WINDOW)
    ticks = _count_ticks(batcher)
    end = _Endpoint([], "a")
    try:
        batcher.add(end.sock, end.read_one)
        for i in range(15):  # one publisher's 50 packets/s: one per window or less
            peer.sendto(b"sparse-%d" % i, end.address)
            await _until(lambda i=i: len(end.got) == i + 1)
            assert end.got[-1][0] == b"sparse-%d" % i
            assert not batcher.polling
            await asyncio.sleep(0.02)
        # each read by the event loop's reader as it arrived, none by a timer
        assert batcher.wakeups == batcher.datagrams == 15 and ticks[0] == 0
        assert 0 < batcher.per_window < 2
    finally:
        batcher.close()
        end.sock.close()


async def test_dense_datagrams_are_read_in_batches_then_the_reader_returns(
    peer: socket.socket,
) -> None:
    loop = asyncio.get_running_loop()
    batcher = ReadBatcher(loop, 0.05)  # wide: a loaded machine's late sleeps still fit
    ticks = _count_ticks(batcher)
    log: list[tuple[str, Any]] = []
    ends = [_Endpoint(log, name) for name in "abc"]
    try:
        for end in ends:
            batcher.add(end.sock, end.read_one)
        assert len(batcher) == 3
        sent: list[tuple[int, bytes]] = []
        saw_polling = False
        for i in range(120):  # 3 ms apart: one window holds several
            index = i % 3
            payload = b"dense-%d" % i
            peer.sendto(payload, ends[index].address)
            sent.append((index, payload))
            await asyncio.sleep(0.003)
            saw_polling = saw_polling or batcher.polling
        await _until(lambda: sum(len(e.got) for e in ends) == 120)
        assert saw_polling and ticks[0] > 0
        for index, end in enumerate(ends):  # every datagram, in order, per socket
            assert [d for d, _ in end.got] == [p for i, p in sent if i == index]
        assert batcher.datagrams == 120
        assert batcher.wakeups < 60  # several datagrams per wake-up
        # the traffic stopped: at the end of the rate period the event loop reads again
        await _until(lambda: not batcher.polling, timeout=2.0)
        ticks_before = ticks[0]
        peer.sendto(b"late", ends[0].address)
        await _until(lambda: ends[0].got[-1][0] == b"late")
        assert ticks[0] == ticks_before  # read by the event loop's reader, not a timer
    finally:
        batcher.close()
        for end in ends:
            end.sock.close()


async def test_sends_of_a_batch_go_out_after_all_its_reads(peer: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    batcher = ReadBatcher(loop, WINDOW)
    log: list[tuple[str, Any]] = []
    ends = [_Endpoint(log, name) for name in "ab"]
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(2.0)

    class Owner:
        dropped_socket = 0

    owner = Owner()

    def forward(end: _Endpoint) -> None:
        end.read_one()
        assert batcher.batching
        data = end.got[-1][0]

        def sendto(datagram: bytes, addr: Any) -> None:
            log.append(("send", datagram))
            sink_sender.sendto(datagram, addr)

        batcher.sends.append((sendto, b"fwd:" + data, sink.getsockname(), owner))

        def refuse(datagram: bytes, addr: Any) -> None:
            raise BlockingIOError  # a full socket buffer

        batcher.sends.append((refuse, data, None, owner))

    sink_sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for end in ends:
            batcher.add(end.sock, functools.partial(forward, end))
        # both datagrams are queued before the loop runs: one batch reads both
        peer.sendto(b"one", ends[0].address)
        peer.sendto(b"two", ends[1].address)
        await asyncio.sleep(0)  # the loop's select sees the epoll set readable
        await _until(lambda: len(log) >= 4)
        kinds = [kind for kind, _ in log]
        assert kinds == ["read", "read", "send", "send"]
        assert {sink.recv(100), sink.recv(100)} == {b"fwd:one", b"fwd:two"}
        assert owner.dropped_socket == 2 and batcher.sends == [] and not batcher.batching
    finally:
        batcher.close()
        sink.close()
        sink_sender.close()
        for end in ends:
            end.sock.close()


async def test_reader_failures_are_contained_and_closed_sockets_forgotten(
    peer: socket.socket,
) -> None:
    loop = asyncio.get_running_loop()
    batcher = ReadBatcher(loop, WINDOW)
    good = _Endpoint([], "good")
    bad = _Endpoint([], "bad")

    def failing() -> None:
        bad.sock.recv(100)
        raise RuntimeError("reader bug")

    try:
        batcher.add(bad.sock, failing)
        batcher.add(good.sock, good.read_one)
        peer.sendto(b"x", bad.address)
        peer.sendto(b"y", good.address)
        await _until(lambda: len(good.got) == 1)
        assert good.got[0][0] == b"y"
        # a socket closed without remove() is pruned at the next add()
        bad.sock.close()
        third = _Endpoint([], "third")
        batcher.add(third.sock, third.read_one)
        assert len(batcher) == 2
        batcher.remove(third.sock)
        third.sock.close()
        batcher.remove(good.sock)
        assert batcher.closed  # the last socket gone: epoll set closed, reader removed
        assert batcher._fd not in loop._selector.get_map()  # type: ignore[attr-defined]
    finally:
        batcher.close()
        good.sock.close()


async def test_batcher_per_loop_and_off_switch() -> None:
    loop = asyncio.get_running_loop()
    first = batcher_for(loop, 0.005)
    assert first is not None and batcher_for(loop, 0.005) is first
    other = batcher_for(loop, 0.01)  # another window: its own batcher
    assert other is not None and other is not first and other._window == 0.01
    assert read_batching.loop_batchers(loop) == [first, other]
    other.close()
    first.close()
    second = batcher_for(loop, 0.005)
    assert second is not None and second is not first  # a closed one is replaced
    second.close()
    assert batcher_for(loop, 0.0) is None


def test_window_from_environment(monkeypatch: pytest.MonkeyPatch,
                                 caplog: pytest.LogCaptureFixture) -> None:
    for text, window in (("", 0.005), ("12", 0.012), ("0", 0.0), ("abc", 0.005),
                         ("-3", 0.005), ("1000", 0.005)):
        monkeypatch.setenv("AIOLIVEKIT_READ_BATCH_MS", text)
        assert read_batching.window_from_env() == pytest.approx(window), text
    assert "'abc' is not 0..100 ms" in caplog.text
