"""The data layer of one Room: routes incoming non-user packets and sends streams/RPC.

Contract with the client engine / Room (``room.py``, ``participant.py``):

* :data:`CLIENT_PROTOCOL` -- the client-to-client protocol level implemented here; the
  Room gives it to the engine, which announces it at join (``client_protocol=`` in the
  signal URL). :data:`CLIENT_CAPABILITIES` -- ``ClientInfo.Capability`` values the data
  layer can honour (deflate-raw compressed incoming streams), announced the same way
  (``capabilities=``). The engine does not import this module.
* :class:`DataSender` -- what the engine gives the data layer (``attach`` on connect).
  ``send_packet`` fills participant identity/sid and sequence and raises
  :class:`~aiolivekit.errors.PublishDataError` when not connected;
  ``remote_client_protocol(identity)`` returns that participant's announced
  ``client_protocol`` (``ParticipantInfo.client_protocol``) or ``None`` if it is not in
  the room.
* :class:`DataManager` -- created in ``Room.__init__`` with ``emit`` (the Room's event
  emitter ``emit``) and ``lookup_participant(identity)`` (a Participant or None).
  ``attach(sender)`` on connect; ``handle_packet(packet)`` for every incoming packet
  whose value is not ``user``; ``on_participant_disconnected(identity)`` when a remote
  participant leaves; ``close()`` on room disconnect (open readers raise
  ``StreamError("Disconnected while receiving")``, pending RPCs fail with
  ``RECIPIENT_DISCONNECTED``, running handlers are cancelled; handler registrations
  survive, and ``attach`` may be called again for a new connection).

Events emitted through ``emit``: ``transcription_received(segments, participant,
publication)`` and ``sip_dtmf_received(SipDTMF)``. (``chat_message`` packets are not
surfaced, like the official Python SDK.)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import mimetypes
import os
import zlib
from collections.abc import Callable
from typing import Any, Protocol

from livekit.protocol import models as models_pb

from ..errors import PublishDataError, PublishDTMFError, PublishTranscriptionError, StreamError
from ..types import SipDTMF, Transcription, TranscriptionSegment
from . import rpc as rpc_mod
from .rpc import RpcClient, RpcError, RpcHandler, RpcServer, RpcTransport
from .streams import (
    DEFAULT_READER_BUFFER_LIMIT,
    DISCONNECT_ERROR,
    STREAM_CHUNK_SIZE,
    ByteStreamHandler,
    ByteStreamInfo,
    ByteStreamReader,
    ByteStreamWriter,
    StreamAssembler,
    StreamClosed,
    StreamData,
    StreamEvent,
    StreamOpened,
    TextStreamHandler,
    TextStreamInfo,
    TextStreamReader,
    TextStreamWriter,
    build_header,
    chunk_packets,
    header_packet,
    info_from_header,
    new_stream_id,
    trailer_packet,
)

__all__ = [
    "CLIENT_CAPABILITIES",
    "CLIENT_PROTOCOL",
    "CLIENT_PROTOCOL_DATA_STREAM_RPC",
    "CLIENT_PROTOCOL_DATA_STREAM_V2",
    "CLIENT_PROTOCOL_DEFAULT",
    "DataManager",
    "DataSender",
]

logger = logging.getLogger(__name__)

CLIENT_PROTOCOL_DEFAULT = 0
CLIENT_PROTOCOL_DATA_STREAM_RPC = 1
CLIENT_PROTOCOL_DATA_STREAM_V2 = 2

CLIENT_PROTOCOL: int = CLIENT_PROTOCOL_DATA_STREAM_V2
"""We receive legacy and single-packet streams and speak RPC v1 and v2."""

CLIENT_CAPABILITIES: tuple[int, ...] = (models_pb.ClientInfo.CAP_COMPRESSION_DEFLATE_RAW,)
"""We inflate deflate-raw compressed incoming streams and RPC payloads, and deflate what
``send_text``/``send_bytes`` send to peers that all announce this capability."""

_FILE_READ_BLOCK = STREAM_CHUNK_SIZE * 64
_DEFLATE_INLINE_MAX = 256 * 1024


def _deflate_raw(data: bytes) -> bytes:
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    return comp.compress(data) + comp.flush()


def _copy_header(header: models_pb.DataStream.Header) -> models_pb.DataStream.Header:
    copy = models_pb.DataStream.Header()
    copy.CopyFrom(header)
    return copy


class DataSender(Protocol):
    """What the engine provides to the data layer.

    Optional extras (looked up with ``getattr``; without them broadcasts are never sent
    as single packets and nothing is compressed): ``remote_identities() -> list[str]``
    (remote participants in the room) and ``remote_capabilities(identity) ->
    list[int] | None`` (that participant's ``ParticipantInfo.capabilities``).
    """

    @property
    def local_identity(self) -> str: ...

    async def send_packet(
        self, packet: models_pb.DataPacket, *, reliable: bool = True
    ) -> None: ...

    def remote_client_protocol(self, identity: str) -> int | None: ...


class DataManager(RpcTransport):
    """Data streams, RPC, transcription and DTMF of one Room (see module docstring)."""

    local_client_protocol = CLIENT_PROTOCOL

    def __init__(
        self,
        emit: Callable[..., None],
        lookup_participant: Callable[[str], Any],
        *,
        stream_buffer_limit: int = DEFAULT_READER_BUFFER_LIMIT,
    ) -> None:
        self._emit = emit
        self._lookup = lookup_participant
        self._sender: DataSender | None = None
        self._buffer_limit = stream_buffer_limit
        self._assembler = StreamAssembler(max_inflated=stream_buffer_limit)
        self._readers: dict[str, TextStreamReader | ByteStreamReader] = {}
        self._text_handlers: dict[str, TextStreamHandler] = {}
        self._byte_handlers: dict[str, ByteStreamHandler] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rpc_client = RpcClient(self)
        self._rpc_server = RpcServer(self)

    # ------------------------------------------------------------------ lifecycle

    def set_stream_payload_limit(self, limit: int | None) -> None:
        """Incoming streams whose (inflated) payload exceeds ``limit`` bytes end with
        :class:`StreamError` (``DataStreamOptions.max_payload_byte_length``; None: no
        limit beyond the reader buffer limit)."""
        self._assembler.max_payload = limit

    def attach(self, sender: DataSender) -> None:
        self._sender = sender

    @property
    def attached(self) -> bool:
        return self._sender is not None

    def close(self) -> None:
        """Room disconnected: fail readers and RPCs, cancel handler tasks, forget the sender."""
        self._sender = None
        self._apply(self._assembler.close(DISCONNECT_ERROR))
        for reader in list(self._readers.values()):
            reader._end({}, DISCONNECT_ERROR)
        self._readers.clear()
        self._rpc_client.close()
        self._rpc_server.close()
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()

    def on_participant_disconnected(self, identity: str) -> None:
        self._apply(self._assembler.sender_left(identity))
        self._rpc_client.participant_left(identity)

    # ------------------------------------------------------------------ transport (RpcTransport)

    async def send_packet(self, packet: models_pb.DataPacket) -> None:
        sender = self._sender
        if sender is None:
            raise PublishDataError("cannot send data: not connected")
        await sender.send_packet(packet, reliable=True)

    def remote_client_protocol(self, identity: str) -> int | None:
        sender = self._sender
        return None if sender is None else sender.remote_client_protocol(identity)

    async def send_rpc_stream(
        self, text: str, *, topic: str, destination: str, attributes: dict[str, str]
    ) -> None:
        await self.send_text(
            text, topic=topic, destination_identities=[destination], attributes=attributes
        )

    @property
    def local_identity(self) -> str:
        return self._sender.local_identity if self._sender is not None else ""

    def _recipients(self, destinations: list[str] | None) -> list[str] | None:
        """Named recipients, or everyone for a broadcast (None when the sender can't tell)."""
        if destinations:
            return list(destinations)
        lister = getattr(self._sender, "remote_identities", None)
        return list(lister()) if callable(lister) else None

    def _eligibility(self, destinations: list[str] | None) -> tuple[bool, bool]:
        """(single-packet ok, deflate-raw ok) for a send to ``destinations``.

        Single-packet streams need every recipient at client protocol >= 2; compression
        additionally needs ``CAP_COMPRESSION_DEFLATE_RAW`` from each (known only when the
        DataSender has the optional ``remote_capabilities(identity)``). Unknown -> no.
        """
        if self.local_client_protocol < CLIENT_PROTOCOL_DATA_STREAM_V2:
            return False, False
        recipients = self._recipients(destinations)
        if recipients is None:
            return False, False
        for identity in recipients:
            level = self.remote_client_protocol(identity)
            if level is None or level < CLIENT_PROTOCOL_DATA_STREAM_V2:
                return False, False
        caps_of = getattr(self._sender, "remote_capabilities", None)
        if not callable(caps_of):
            return True, False
        cap = models_pb.ClientInfo.CAP_COMPRESSION_DEFLATE_RAW
        compress = all(cap in (caps_of(identity) or ()) for identity in recipients)
        return True, compress

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("data handler task failed", exc_info=task.exception())

    # ------------------------------------------------------------------ handlers

    def register_text_stream_handler(self, topic: str, handler: TextStreamHandler) -> None:
        if topic in self._text_handlers:
            raise ValueError(f"text stream handler for topic '{topic}' already set")
        self._text_handlers[topic] = handler

    def unregister_text_stream_handler(self, topic: str) -> None:
        self._text_handlers.pop(topic, None)

    def register_byte_stream_handler(self, topic: str, handler: ByteStreamHandler) -> None:
        if topic in self._byte_handlers:
            raise ValueError(f"byte stream handler for topic '{topic}' already set")
        self._byte_handlers[topic] = handler

    def unregister_byte_stream_handler(self, topic: str) -> None:
        self._byte_handlers.pop(topic, None)

    def register_rpc_method(self, method: str, handler: RpcHandler) -> None:
        self._rpc_server.register(method, handler)

    def unregister_rpc_method(self, method: str) -> None:
        self._rpc_server.unregister(method)

    # ------------------------------------------------------------------ incoming

    def handle_packet(self, packet: models_pb.DataPacket) -> None:
        """Route one incoming packet (any value except ``user``)."""
        which = packet.WhichOneof("value")
        sender = packet.participant_identity
        try:
            if which == "stream_header":
                self._apply(self._assembler.handle_header(packet.stream_header, sender))
            elif which == "stream_chunk":
                self._apply(self._assembler.handle_chunk(packet.stream_chunk))
            elif which == "stream_trailer":
                self._apply(self._assembler.handle_trailer(packet.stream_trailer))
            elif which == "rpc_request":
                self._rpc_server.handle_request_packet(packet.rpc_request, sender)
            elif which == "rpc_ack":
                self._rpc_client.handle_ack(packet.rpc_ack.request_id)
            elif which == "rpc_response":
                self._rpc_client.handle_response_packet(packet.rpc_response, sender)
            elif which == "transcription":
                self._on_transcription(packet.transcription)
            elif which == "sip_dtmf":
                self._emit(
                    "sip_dtmf_received",
                    SipDTMF(
                        code=packet.sip_dtmf.code,
                        digit=packet.sip_dtmf.digit,
                        participant=self._lookup(sender) if sender else None,
                    ),
                )
            else:
                logger.debug("data packet %r ignored", which)
        except Exception:
            logger.exception("failed to handle %s packet from %r", which, sender)

    def _on_transcription(self, tr: models_pb.Transcription) -> None:
        segments = [
            TranscriptionSegment(
                id=s.id,
                text=s.text,
                start_time=s.start_time,
                end_time=s.end_time,
                language=s.language,
                final=s.final,
            )
            for s in tr.segments
        ]
        participant = self._lookup(tr.transcribed_participant_identity)
        publication = None
        if participant is not None:
            publications = getattr(participant, "track_publications", None) or {}
            publication = publications.get(tr.track_id)
        self._emit("transcription_received", segments, participant, publication)

    def _apply(self, events: list[StreamEvent]) -> None:
        for ev in events:
            if isinstance(ev, StreamOpened):
                self._open_stream(ev)
            elif isinstance(ev, StreamData):
                reader = self._readers.get(ev.stream_id)
                if reader is not None and not reader._push(ev.data):
                    logger.warning("stream %s failed: reader buffer limit", ev.stream_id)
                    self._readers.pop(ev.stream_id, None)
                    self._assembler.discard(ev.stream_id)
            elif isinstance(ev, StreamClosed):
                reader = self._readers.pop(ev.stream_id, None)
                if reader is not None:
                    reader._end(ev.attributes, ev.error)

    def _open_stream(self, ev: StreamOpened) -> None:
        sid = ev.stream_id
        info = info_from_header(ev.header)
        on_close = self._closer(sid)
        reader: TextStreamReader | ByteStreamReader
        if isinstance(info, TextStreamInfo):
            if info.topic in (rpc_mod.RPC_REQUEST_TOPIC, rpc_mod.RPC_RESPONSE_TOPIC):
                reader = TextStreamReader(info, buffer_limit=self._buffer_limit, on_close=on_close)
                self._readers[sid] = reader
                if info.topic == rpc_mod.RPC_REQUEST_TOPIC:
                    self._rpc_server.handle_request_stream(reader, ev.sender_identity)
                else:
                    self._spawn(self._rpc_response_stream(reader, ev.sender_identity))
                return
            text_handler = self._text_handlers.get(info.topic)
            if text_handler is None:
                logger.info("ignoring text stream with topic '%s', no handler", info.topic)
                self._assembler.discard(sid)
                return
            reader = TextStreamReader(info, buffer_limit=self._buffer_limit, on_close=on_close)
            self._readers[sid] = reader
            self._call_handler(text_handler, reader, ev.sender_identity)
        else:
            assert isinstance(info, ByteStreamInfo)
            byte_handler = self._byte_handlers.get(info.topic)
            if byte_handler is None:
                logger.info("ignoring byte stream with topic '%s', no handler", info.topic)
                self._assembler.discard(sid)
                return
            reader = ByteStreamReader(info, buffer_limit=self._buffer_limit, on_close=on_close)
            self._readers[sid] = reader
            self._call_handler(byte_handler, reader, ev.sender_identity)

    def _closer(self, sid: str) -> Callable[[], None]:
        def on_close() -> None:
            self._readers.pop(sid, None)
            self._assembler.discard(sid)

        return on_close

    def _call_handler(self, handler: Callable[..., Any], reader: Any, identity: str) -> None:
        try:
            result = handler(reader, identity)
        except Exception:
            logger.exception("stream handler for topic %r raised", reader.info.topic)
            return
        if inspect.iscoroutine(result):  # tolerate `async def` handlers: run them as tasks
            self._spawn(result)

    async def _rpc_response_stream(self, reader: TextStreamReader, sender: str) -> None:
        request_id = (reader.info.attributes or {}).get(rpc_mod.ATTR_REQUEST_ID, "")
        if not request_id:
            logger.warning("RPC response stream without request id from %r", sender)
            reader.close()
            return
        try:
            payload = await reader.read_all()
        except StreamError as exc:
            err = RpcError._built_in(
                RpcError.ErrorCode.APPLICATION_ERROR, f"Failed to read response stream: {exc}"
            )
            self._rpc_client.handle_response(request_id, None, err, sender)
            return
        self._rpc_client.handle_response(request_id, payload, None, sender)

    # ------------------------------------------------------------------ outgoing streams

    async def _send_stream_packet(self, packet: models_pb.DataPacket) -> None:
        try:
            await self.send_packet(packet)
        except PublishDataError as exc:
            raise StreamError(exc.message) from exc

    async def stream_text(
        self,
        *,
        destination_identities: list[str] | None = None,
        topic: str = "",
        attributes: dict[str, str] | None = None,
        stream_id: str | None = None,
        reply_to_id: str | None = None,
        total_size: int | None = None,
        sender_identity: str | None = None,
    ) -> TextStreamWriter:
        send = self._send_stream_packet
        if sender_identity and sender_identity != self.local_identity:
            # written on behalf of another participant (an agent's user transcript): its
            # packets carry that identity (livekit-server lets an agent do this)
            on_behalf = sender_identity

            async def send(packet: models_pb.DataPacket) -> None:
                packet.participant_identity = on_behalf
                await self._send_stream_packet(packet)

        header = build_header(
            stream_id=stream_id or new_stream_id(),
            topic=topic,
            kind="text",
            mime_type="text/plain",
            attributes=attributes,
            reply_to_id=reply_to_id,
        )
        writer = TextStreamWriter(send, header, destination_identities, total_size=total_size)
        await writer._open()
        return writer

    async def send_text(
        self,
        text: str,
        *,
        destination_identities: list[str] | None = None,
        topic: str = "",
        attributes: dict[str, str] | None = None,
        reply_to_id: str | None = None,
        stream_id: str | None = None,
        attachments: list[str] | None = None,
        compress: bool = True,
    ) -> TextStreamInfo:
        data = text.encode("utf-8")
        header = build_header(
            stream_id=stream_id or new_stream_id(),
            topic=topic,
            kind="text",
            mime_type="text/plain",
            attributes=attributes,
            reply_to_id=reply_to_id,
            attachments=attachments,
            total_length=len(data),
        )
        info = info_from_header(header)
        assert isinstance(info, TextStreamInfo)
        await self._send_whole(header, data, destination_identities, text=True, compress=compress)
        return info

    async def stream_bytes(
        self,
        name: str,
        *,
        total_size: int | None = None,
        mime_type: str = "application/octet-stream",
        attributes: dict[str, str] | None = None,
        stream_id: str | None = None,
        destination_identities: list[str] | None = None,
        topic: str = "",
    ) -> ByteStreamWriter:
        header = build_header(
            stream_id=stream_id or new_stream_id(),
            topic=topic,
            kind="byte",
            mime_type=mime_type,
            attributes=attributes,
            name=name,
            total_length=total_size,
        )
        writer = ByteStreamWriter(self._send_stream_packet, header, destination_identities)
        await writer._open()
        return writer

    async def send_bytes(
        self,
        data: bytes,
        *,
        topic: str = "",
        name: str | None = None,
        mime_type: str | None = None,
        destination_identities: list[str] | None = None,
        attributes: dict[str, str] | None = None,
        stream_id: str | None = None,
        compress: bool = True,
    ) -> ByteStreamInfo:
        data = bytes(data)
        header = build_header(
            stream_id=stream_id or new_stream_id(),
            topic=topic,
            kind="byte",
            mime_type=mime_type or "application/octet-stream",
            attributes=attributes,
            name=name if name is not None else "unknown",
            total_length=len(data),
        )
        info = info_from_header(header)
        assert isinstance(info, ByteStreamInfo)
        await self._send_whole(header, data, destination_identities, text=False,
                               compress=compress)
        return info

    async def send_file(
        self,
        file_path: str | os.PathLike[str],
        *,
        topic: str = "",
        destination_identities: list[str] | None = None,
        attributes: dict[str, str] | None = None,
        stream_id: str | None = None,
        compress: bool = True,
    ) -> ByteStreamInfo:
        path = os.fspath(file_path)
        loop = asyncio.get_running_loop()
        size = await loop.run_in_executor(None, os.path.getsize, path)  # FileNotFoundError early
        mime_type, _ = mimetypes.guess_type(path)
        writer = await self.stream_bytes(
            os.path.basename(path),
            total_size=size,
            mime_type=mime_type or "application/octet-stream",
            attributes=attributes,
            stream_id=stream_id,
            destination_identities=destination_identities,
            topic=topic,
        )
        fh = await loop.run_in_executor(None, open, path, "rb")
        try:
            while True:
                block = await loop.run_in_executor(None, fh.read, _FILE_READ_BLOCK)
                if not block:
                    break
                await writer.write(block)
        except BaseException as exc:
            if not writer._closed:
                try:
                    await writer.aclose(reason=f"send_file failed: {exc!r}"[:200])
                except Exception:  # noqa: BLE001 - best effort, the original error wins
                    logger.debug("could not abort stream %s", writer.info.stream_id)
            raise
        finally:
            fh.close()
        await writer.aclose()
        return writer.info

    async def _send_whole(
        self,
        header: models_pb.DataStream.Header,
        data: bytes,
        destinations: list[str] | None,
        *,
        text: bool,
        compress: bool = True,
    ) -> None:
        """Send a complete payload.

        For data-streams-v2 recipients: one packet when it fits, deflate-raw compressed
        when they all accept it and it helps; otherwise header, chunks, trailer.
        """
        inline_ok, deflate_ok = self._eligibility(destinations)
        payload = data
        if inline_ok and deflate_ok and compress and data:
            if len(data) > _DEFLATE_INLINE_MAX:  # keep the event loop responsive
                loop = asyncio.get_running_loop()
                packed = await loop.run_in_executor(None, _deflate_raw, data)
            else:
                packed = _deflate_raw(data)
            if len(packed) < len(data):
                header = _copy_header(header)
                header.compression = models_pb.DataStream.DEFLATE_RAW
                payload = packed
        if inline_ok:
            inline = _copy_header(header)
            inline.inline_content = payload
            packet = header_packet(inline, destinations)
            if packet.ByteSize() <= STREAM_CHUNK_SIZE:
                await self._send_stream_packet(packet)
                return
        await self._send_stream_packet(header_packet(header, destinations))
        # compressed bytes are cut anywhere; plain text only on character boundaries
        as_text = text and payload is data
        for packet in chunk_packets(header.stream_id, payload, 0, destinations, text=as_text):
            await self._send_stream_packet(packet)
        await self._send_stream_packet(trailer_packet(header.stream_id, destinations))

    # ------------------------------------------------------------------ RPC

    async def perform_rpc(
        self,
        *,
        destination_identity: str,
        method: str,
        payload: str,
        response_timeout: float | None = None,
        max_round_trip_latency: float | None = None,
    ) -> str:
        if self._sender is None:
            raise RpcError._built_in(RpcError.ErrorCode.SEND_FAILED, "not connected")
        return await self._rpc_client.perform(
            destination_identity=destination_identity,
            method=method,
            payload=payload,
            response_timeout=response_timeout,
            max_round_trip_latency=max_round_trip_latency,
        )

    # ------------------------------------------------------------------ transcription / DTMF

    async def publish_transcription(self, transcription: Transcription) -> None:
        if not transcription.track_sid.startswith("TR_"):
            # the official Rust-based SDKs abort when a transcription's track sid is not a sid
            logger.warning("transcription track_sid %r is not a track sid (TR_...)",
                           transcription.track_sid)
        packet = models_pb.DataPacket(kind=models_pb.DataPacket.RELIABLE)
        tr = packet.transcription
        tr.transcribed_participant_identity = transcription.participant_identity
        tr.track_id = transcription.track_sid
        for s in transcription.segments:
            tr.segments.add(
                id=s.id,
                text=s.text,
                start_time=int(s.start_time),
                end_time=int(s.end_time),
                final=bool(s.final),
                language=s.language,
            )
        try:
            await self.send_packet(packet)
        except PublishDataError as exc:
            raise PublishTranscriptionError(exc.message) from exc

    async def publish_dtmf(self, *, code: int, digit: str) -> None:
        packet = models_pb.DataPacket(kind=models_pb.DataPacket.RELIABLE)
        packet.sip_dtmf.code = int(code)
        packet.sip_dtmf.digit = digit
        try:
            await self.send_packet(packet)
        except PublishDataError as exc:
            raise PublishDTMFError(exc.message) from exc
