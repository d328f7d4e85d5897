"""Text and byte data streams: wire packets, a sans-I/O assembler, readers and writers.

Wire format (``livekit.protocol.models.DataStream``): a stream is a ``stream_header``
packet, any number of ``stream_chunk`` packets (``content`` at most
:data:`STREAM_CHUNK_SIZE` bytes, ``chunk_index`` counting from 0) and a
``stream_trailer`` (a non-empty ``reason`` means the sender aborted), all reliable and
addressed to the same ``destination_identities``. Text is split only on UTF-8 character
boundaries. "Data streams v2" peers (client protocol >= 2) also accept a single-packet
stream whose whole payload sits in ``Header.inline_content``, and deflate-raw compressed
streams (``Header.compression``; chunks are then slices of one deflate stream) when they
announce ``CAP_COMPRESSION_DEFLATE_RAW``. We inflate what arrives; the DataManager sends
those forms only when every recipient announced them.

Memory policy: a reader buffers what arrived but was not read yet, up to
``buffer_limit`` bytes (:data:`DEFAULT_READER_BUFFER_LIMIT`, 64 MiB). Beyond it the
stream is failed with :class:`StreamError` and further chunks are dropped: a handler
that never reads cannot make the process grow without bound. Already buffered data is
still delivered before the error. The same limit bounds what one compressed stream may
inflate to.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import time
import uuid
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from livekit.protocol import models as models_pb

from ..errors import StreamError

__all__ = [
    "DEFAULT_READER_BUFFER_LIMIT",
    "STREAM_CHUNK_SIZE",
    "BaseStreamInfo",
    "ByteStreamHandler",
    "ByteStreamInfo",
    "ByteStreamReader",
    "ByteStreamWriter",
    "StreamAssembler",
    "StreamClosed",
    "StreamData",
    "StreamOpened",
    "TextStreamHandler",
    "TextStreamInfo",
    "TextStreamReader",
    "TextStreamWriter",
    "build_header",
    "chunk_packets",
    "split_utf8",
    "trailer_packet",
]

logger = logging.getLogger(__name__)

STREAM_CHUNK_SIZE = 15_000
"""Largest ``content`` of one stream chunk, in bytes (same as the official SDKs)."""

DEFAULT_READER_BUFFER_LIMIT = 64 * 1024 * 1024
"""Bytes a reader may hold unread before its stream is failed (see module docstring)."""

DISCONNECT_ERROR = "Disconnected while receiving"

_DataStream = models_pb.DataStream


# --------------------------------------------------------------------------- infos



class _Inflater(Protocol):
    """A ``zlib.decompressobj`` (typed by what is used of it)."""

    def decompress(self, data: bytes, max_length: int = ...) -> bytes: ...

    def flush(self, length: int = ...) -> bytes: ...

    @property
    def unconsumed_tail(self) -> bytes: ...

@dataclass
class BaseStreamInfo:
    stream_id: str
    mime_type: str
    topic: str
    timestamp: int
    size: int | None
    attributes: dict[str, str] | None


@dataclass
class TextStreamInfo(BaseStreamInfo):
    attachments: list[str] = field(default_factory=list)


@dataclass
class ByteStreamInfo(BaseStreamInfo):
    name: str = ""


AnyStreamInfo = TextStreamInfo | ByteStreamInfo


def info_from_header(header: models_pb.DataStream.Header) -> AnyStreamInfo:
    """The public info record described by a stream header."""
    size = header.total_length if header.HasField("total_length") else 0
    if header.WhichOneof("content_header") == "byte_header":
        return ByteStreamInfo(
            stream_id=header.stream_id,
            mime_type=header.mime_type,
            topic=header.topic,
            timestamp=header.timestamp,
            size=size,
            attributes=dict(header.attributes),
            name=header.byte_header.name,
        )
    return TextStreamInfo(
        stream_id=header.stream_id,
        mime_type=header.mime_type,
        topic=header.topic,
        timestamp=header.timestamp,
        size=size,
        attributes=dict(header.attributes),
        attachments=list(header.text_header.attached_stream_ids),
    )


# --------------------------------------------------------------------------- outgoing


def _now_ms() -> int:
    return int(time.time() * 1000)


def split_utf8(data: bytes, limit: int = STREAM_CHUNK_SIZE) -> Iterator[bytes]:
    """Split UTF-8 ``data`` into pieces of at most ``limit`` bytes, never inside a character."""
    if limit < 4:
        raise ValueError("limit must be at least 4 bytes")
    start, n = 0, len(data)
    while start < n:
        end = min(start + limit, n)
        if end < n:
            # step back over continuation bytes (0b10xxxxxx) to a character start
            while end > start and (data[end] & 0xC0) == 0x80:
                end -= 1
        yield data[start:end]
        start = end


def build_header(
    *,
    stream_id: str,
    topic: str,
    kind: str,
    mime_type: str,
    attributes: dict[str, str] | None = None,
    total_length: int | None = None,
    name: str = "",
    reply_to_id: str | None = None,
    attachments: list[str] | None = None,
    timestamp: int | None = None,
) -> models_pb.DataStream.Header:
    """A stream header; ``kind`` is ``"text"`` or ``"byte"``."""
    header = _DataStream.Header(
        stream_id=stream_id,
        timestamp=_now_ms() if timestamp is None else timestamp,
        topic=topic,
        mime_type=mime_type,
    )
    if total_length is not None:
        header.total_length = total_length
    if attributes:
        header.attributes.update(attributes)
    if kind == "text":
        header.text_header.operation_type = _DataStream.CREATE
        if reply_to_id:
            header.text_header.reply_to_stream_id = reply_to_id
        if attachments:
            header.text_header.attached_stream_ids.extend(attachments)
    elif kind == "byte":
        header.byte_header.name = name
    else:
        raise ValueError(f"unknown stream kind {kind!r}")
    return header


def _packet(destinations: list[str] | None) -> models_pb.DataPacket:
    packet = models_pb.DataPacket(kind=models_pb.DataPacket.RELIABLE)
    if destinations:
        packet.destination_identities.extend(destinations)
    return packet


def header_packet(
    header: models_pb.DataStream.Header, destinations: list[str] | None
) -> models_pb.DataPacket:
    packet = _packet(destinations)
    packet.stream_header.CopyFrom(header)
    return packet


def chunk_packets(
    stream_id: str,
    data: bytes,
    first_index: int,
    destinations: list[str] | None,
    *,
    text: bool,
) -> list[models_pb.DataPacket]:
    """The chunk packets carrying ``data``, indices from ``first_index``."""
    pieces = split_utf8(data) if text else (
        data[i : i + STREAM_CHUNK_SIZE] for i in range(0, len(data), STREAM_CHUNK_SIZE)
    )
    packets = []
    for offset, piece in enumerate(pieces):
        packet = _packet(destinations)
        packet.stream_chunk.stream_id = stream_id
        packet.stream_chunk.chunk_index = first_index + offset
        packet.stream_chunk.content = piece
        packets.append(packet)
    return packets


def trailer_packet(
    stream_id: str,
    destinations: list[str] | None,
    *,
    reason: str = "",
    attributes: dict[str, str] | None = None,
) -> models_pb.DataPacket:
    packet = _packet(destinations)
    packet.stream_trailer.stream_id = stream_id
    packet.stream_trailer.reason = reason
    if attributes:
        packet.stream_trailer.attributes.update(attributes)
    return packet


SendPacket = Callable[[models_pb.DataPacket], Awaitable[None]]


class _BaseStreamWriter:
    """Sends one outgoing stream; writes are serialised by a lock."""

    _text: bool = False

    def __init__(
        self,
        send: SendPacket,
        header: models_pb.DataStream.Header,
        destinations: list[str] | None,
    ) -> None:
        self._send = send
        self._header = header
        self._destinations = list(destinations) if destinations else None
        self._lock = asyncio.Lock()
        self._next_index = 0
        self._closed = False
        self._opened = False

    async def _send_checked(self, packet: models_pb.DataPacket) -> None:
        try:
            await self._send(packet)
        except StreamError:
            raise
        except Exception as exc:  # PublishDataError, transport errors
            raise StreamError(f"failed to send stream packet: {exc}") from exc

    async def _open(self) -> None:
        await self._send_checked(header_packet(self._header, self._destinations))
        self._opened = True

    async def _write_bytes(self, data: bytes) -> None:
        async with self._lock:
            if self._closed:
                raise RuntimeError("Cannot write after stream is closed")
            packets = chunk_packets(
                self._header.stream_id, data, self._next_index, self._destinations, text=self._text
            )
            for packet in packets:
                await self._send_checked(packet)
                self._next_index += 1

    async def aclose(self, *, reason: str = "", attributes: dict[str, str] | None = None) -> None:
        """Send the trailer; a non-empty ``reason`` tells the receiver the stream was aborted."""
        async with self._lock:
            if self._closed:
                raise RuntimeError("Stream already closed")
            self._closed = True
            await self._send_checked(
                trailer_packet(
                    self._header.stream_id, self._destinations, reason=reason, attributes=attributes
                )
            )


class TextStreamWriter(_BaseStreamWriter):
    """An outgoing text stream (from :meth:`LocalParticipant.stream_text`)."""

    _text = True

    def __init__(
        self,
        send: SendPacket,
        header: models_pb.DataStream.Header,
        destinations: list[str] | None,
        *,
        total_size: int | None = None,
    ) -> None:
        super().__init__(send, header, destinations)
        info = info_from_header(header)
        assert isinstance(info, TextStreamInfo)
        if not info.size and total_size is not None:
            info.size = total_size
        self._info = info

    @property
    def info(self) -> TextStreamInfo:
        return self._info

    async def write(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError("TextStreamWriter.write expects str")
        await self._write_bytes(text.encode("utf-8"))


class ByteStreamWriter(_BaseStreamWriter):
    """An outgoing byte stream (from :meth:`LocalParticipant.stream_bytes`)."""

    def __init__(
        self,
        send: SendPacket,
        header: models_pb.DataStream.Header,
        destinations: list[str] | None,
    ) -> None:
        super().__init__(send, header, destinations)
        info = info_from_header(header)
        assert isinstance(info, ByteStreamInfo)
        self._info = info

    @property
    def info(self) -> ByteStreamInfo:
        return self._info

    async def write(self, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("ByteStreamWriter.write expects bytes")
        await self._write_bytes(bytes(data))


def new_stream_id() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------- incoming core


@dataclass
class StreamOpened:
    stream_id: str
    sender_identity: str
    header: models_pb.DataStream.Header


@dataclass
class StreamData:
    stream_id: str
    data: bytes


@dataclass
class StreamClosed:
    stream_id: str
    attributes: dict[str, str]
    error: str | None = None


StreamEvent = StreamOpened | StreamData | StreamClosed


@dataclass
class _Incoming:
    sender_identity: str
    next_index: int = 0
    inflater: _Inflater | None = None
    produced: int = 0


class StreamAssembler:
    """Sans-I/O: stream packets in, :class:`StreamOpened`/`StreamData`/`StreamClosed` out.

    Streams are keyed by ``stream_id``. Chunk indices must be consecutive: a repeated
    index is ignored, a gap fails the stream. ``max_inflated`` bounds what a compressed
    stream may expand to; ``max_payload`` (``DataStreamOptions.max_payload_byte_length``)
    bounds the payload of any stream, after inflation.
    """

    def __init__(self, *, max_inflated: int = DEFAULT_READER_BUFFER_LIMIT,
                 max_payload: int | None = None) -> None:
        self._streams: dict[str, _Incoming] = {}
        self._max_inflated = max_inflated
        self.max_payload = max_payload

    def __contains__(self, stream_id: str) -> bool:
        return stream_id in self._streams

    def open_streams(self) -> list[str]:
        return list(self._streams)

    def discard(self, stream_id: str) -> None:
        """Forget a stream (no handler, reader closed); its later packets are dropped."""
        self._streams.pop(stream_id, None)

    def handle_header(
        self, header: models_pb.DataStream.Header, sender_identity: str
    ) -> list[StreamEvent]:
        sid = header.stream_id
        if not sid:
            logger.debug("stream header without stream id dropped")
            return []
        if sid in self._streams:
            logger.warning("duplicate header for open stream %s dropped", sid)
            return []
        if header.compression not in (_DataStream.NONE, _DataStream.DEFLATE_RAW):
            logger.warning("stream %s uses unknown compression %d, dropped", sid, header.compression)
            return []
        inflater = zlib.decompressobj(-15) if header.compression == _DataStream.DEFLATE_RAW else None
        state = _Incoming(sender_identity, inflater=inflater)
        events: list[StreamEvent] = [StreamOpened(sid, sender_identity, header)]
        if header.HasField("inline_content"):
            # single-packet stream (data streams v2): complete as it arrives
            events += self._content(sid, state, header.inline_content)
            if not (events and isinstance(events[-1], StreamClosed)):
                events += self._finish(sid, state, {}, None)
            return events
        self._streams[sid] = state
        return events

    def handle_chunk(self, chunk: models_pb.DataStream.Chunk) -> list[StreamEvent]:
        state = self._streams.get(chunk.stream_id)
        if state is None:
            return []
        if chunk.chunk_index < state.next_index:
            logger.debug("duplicate chunk %d of %s ignored", chunk.chunk_index, chunk.stream_id)
            return []
        if chunk.chunk_index > state.next_index:
            self._streams.pop(chunk.stream_id, None)
            return [
                StreamClosed(
                    chunk.stream_id,
                    {},
                    f"missing chunk {state.next_index} (got {chunk.chunk_index})",
                )
            ]
        state.next_index += 1
        return self._content(chunk.stream_id, state, chunk.content)

    def handle_trailer(self, trailer: models_pb.DataStream.Trailer) -> list[StreamEvent]:
        state = self._streams.pop(trailer.stream_id, None)
        if state is None:
            return []
        return self._finish(
            trailer.stream_id, state, dict(trailer.attributes), trailer.reason or None
        )

    def sender_left(self, identity: str) -> list[StreamEvent]:
        """End every open stream of ``identity`` with an error."""
        events: list[StreamEvent] = []
        for sid, state in list(self._streams.items()):
            if state.sender_identity == identity:
                del self._streams[sid]
                events.append(
                    StreamClosed(sid, {}, f"Participant {identity} disconnected while sending")
                )
        return events

    def close(self, reason: str = DISCONNECT_ERROR) -> list[StreamEvent]:
        """End every open stream with ``reason`` (room disconnect)."""
        events: list[StreamEvent] = [StreamClosed(sid, {}, reason) for sid in self._streams]
        self._streams.clear()
        return events

    def _content(self, sid: str, state: _Incoming, content: bytes) -> list[StreamEvent]:
        if not content:
            return []
        if state.inflater is None:
            state.produced += len(content)
            if self.max_payload is not None and state.produced > self.max_payload:
                return self._too_large(sid)
            return [StreamData(sid, bytes(content))]
        limit = self._max_inflated
        if self.max_payload is not None:
            limit = min(limit, self.max_payload)
        try:
            room = limit - state.produced + 1
            data = state.inflater.decompress(content, room)
        except zlib.error as exc:
            self._streams.pop(sid, None)
            return [StreamClosed(sid, {}, f"invalid compressed data: {exc}")]
        state.produced += len(data)
        if state.produced > limit or state.inflater.unconsumed_tail:
            if self.max_payload is not None and limit == self.max_payload:
                return self._too_large(sid)
            self._streams.pop(sid, None)
            return [StreamClosed(sid, {}, "compressed stream exceeds the size limit")]
        return [StreamData(sid, data)] if data else []

    def _too_large(self, sid: str) -> list[StreamEvent]:
        self._streams.pop(sid, None)
        return [StreamClosed(
            sid, {}, f"stream payload exceeds max_payload_byte_length ({self.max_payload} bytes)")]

    def _finish(
        self, sid: str, state: _Incoming, attributes: dict[str, str], error: str | None
    ) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if state.inflater is not None and error is None:
            try:
                tail = state.inflater.flush()
            except zlib.error as exc:
                return [StreamClosed(sid, attributes, f"invalid compressed data: {exc}")]
            state.produced += len(tail)
            if self.max_payload is not None and state.produced > self.max_payload:
                return self._too_large(sid)
            if tail:
                events.append(StreamData(sid, tail))
        events.append(StreamClosed(sid, attributes, error))
        return events


# --------------------------------------------------------------------------- readers


class _BaseStreamReader:
    """Buffers one incoming stream for an async consumer (bounded, see module docstring)."""

    def __init__(
        self,
        info: AnyStreamInfo,
        *,
        buffer_limit: int = DEFAULT_READER_BUFFER_LIMIT,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._info = info
        self._limit = buffer_limit
        self._on_close = on_close
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._ended = False  # no more data will be pushed
        self._closed = False  # consumer is done (end reached or close() called)
        self._error: StreamError | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- producer side (called by the DataManager, synchronously)

    def _push(self, data: bytes) -> bool:
        """Queue ``data``; False when the stream failed (limit reached or reader closed)."""
        if self._ended or self._closed:
            return False
        if self._buffered + len(data) > self._limit:
            self._end(
                {},
                f"stream {self._info.stream_id} exceeded the reader buffer limit "
                f"({self._limit} bytes unread)",
            )
            return False
        self._chunks.append(data)
        self._buffered += len(data)
        self._wake()
        return True

    def _end(self, attributes: dict[str, str], error: str | None) -> None:
        if self._ended:
            return
        self._ended = True
        if attributes:
            if self._info.attributes is None:
                self._info.attributes = {}
            self._info.attributes.update(attributes)
        if error is not None:
            self._error = StreamError(error)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- consumer side

    async def _next_chunk(self) -> bytes:
        while True:
            if self._chunks:
                data = self._chunks.popleft()
                self._buffered -= len(data)
                return data
            if self._closed or self._ended:
                self._finish_consumer()
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _finish_consumer(self) -> None:
        if not self._closed:
            self._closed = True
            if self._on_close is not None:
                self._on_close()

    def close(self) -> None:
        """Stop reading: drop what is buffered; later iteration ends (or raises the stream error)."""
        self._chunks.clear()
        self._buffered = 0
        self._finish_consumer()
        self._wake()

    async def aclose(self) -> None:
        self.close()


class TextStreamReader(_BaseStreamReader):
    """An incoming text stream: an async iterator of ``str`` chunks; :meth:`read_all`.

    Ends with ``StopAsyncIteration``, or :class:`StreamError` when the sender aborted or
    left, the room disconnected, or the unread buffer limit was exceeded.
    """

    def __init__(
        self,
        info: TextStreamInfo,
        *,
        buffer_limit: int = DEFAULT_READER_BUFFER_LIMIT,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(info, buffer_limit=buffer_limit, on_close=on_close)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._decoder_done = False

    @property
    def info(self) -> TextStreamInfo:
        assert isinstance(self._info, TextStreamInfo)
        return self._info

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        while True:
            try:
                data = await self._next_chunk()
            except StopAsyncIteration:
                if not self._decoder_done:
                    self._decoder_done = True
                    tail = self._decoder.decode(b"", final=True)
                    if tail:
                        return tail
                raise
            text = self._decoder.decode(data)
            if text:
                return text

    async def read_all(self) -> str:
        parts = [chunk async for chunk in self]
        return "".join(parts)


class ByteStreamReader(_BaseStreamReader):
    """An incoming byte stream: an async iterator of ``bytes`` chunks."""

    def __init__(
        self,
        info: ByteStreamInfo,
        *,
        buffer_limit: int = DEFAULT_READER_BUFFER_LIMIT,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(info, buffer_limit=buffer_limit, on_close=on_close)

    @property
    def info(self) -> ByteStreamInfo:
        assert isinstance(self._info, ByteStreamInfo)
        return self._info

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        return await self._next_chunk()


TextStreamHandler = Callable[[TextStreamReader, str], None]
ByteStreamHandler = Callable[[ByteStreamReader, str], None]
