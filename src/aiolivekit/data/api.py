"""Public data methods, mixed into ``LocalParticipant`` and ``Room``.

Both mixins use ``self._data`` (a :class:`~aiolivekit.data.manager.DataManager`), which
the host class sets in its constructor.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, overload

from ..types import Transcription
from .rpc import RpcHandler
from .streams import (
    ByteStreamHandler,
    ByteStreamInfo,
    ByteStreamWriter,
    TextStreamHandler,
    TextStreamInfo,
    TextStreamWriter,
)

if TYPE_CHECKING:
    from .manager import DataManager

__all__ = ["LocalParticipantDataMixin", "RoomDataMixin"]


class LocalParticipantDataMixin:
    """Text/byte streams, RPC, transcription and DTMF of the local participant."""

    _data: DataManager

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
        """Open a text stream; write chunks with ``write`` and finish with ``aclose``."""
        return await self._data.stream_text(
            destination_identities=destination_identities,
            topic=topic,
            attributes=attributes,
            stream_id=stream_id,
            reply_to_id=reply_to_id,
            total_size=total_size,
            sender_identity=sender_identity,
        )

    async def send_text(
        self,
        text: str,
        *,
        destination_identities: list[str] | None = None,
        topic: str = "",
        attributes: dict[str, str] | None = None,
        reply_to_id: str | None = None,
        compress: bool = True,
    ) -> TextStreamInfo:
        """Send a whole text as one stream; returns its info."""
        return await self._data.send_text(
            text,
            destination_identities=destination_identities,
            topic=topic,
            attributes=attributes,
            reply_to_id=reply_to_id,
            compress=compress,
        )

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
        """Open a byte stream; write chunks with ``write`` and finish with ``aclose``."""
        return await self._data.stream_bytes(
            name,
            total_size=total_size,
            mime_type=mime_type,
            attributes=attributes,
            stream_id=stream_id,
            destination_identities=destination_identities,
            topic=topic,
        )

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
        """Send an in-memory buffer as one byte stream (``name`` defaults to "unknown")."""
        return await self._data.send_bytes(
            data,
            topic=topic,
            name=name,
            mime_type=mime_type,
            destination_identities=destination_identities,
            attributes=attributes,
            stream_id=stream_id,
            compress=compress,
        )

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
        """Send a file as a byte stream (name = basename, MIME type guessed, size known)."""
        return await self._data.send_file(
            file_path,
            topic=topic,
            destination_identities=destination_identities,
            attributes=attributes,
            stream_id=stream_id,
            compress=compress,
        )

    async def perform_rpc(
        self,
        *,
        destination_identity: str,
        method: str,
        payload: str,
        response_timeout: float | None = None,
        max_round_trip_latency: float | None = None,
    ) -> str:
        """Call ``method`` on ``destination_identity``; returns its response or raises RpcError."""
        return await self._data.perform_rpc(
            destination_identity=destination_identity,
            method=method,
            payload=payload,
            response_timeout=response_timeout,
            max_round_trip_latency=max_round_trip_latency,
        )

    @overload
    def register_rpc_method(
        self, method_name: str, handler: None = None
    ) -> Callable[[RpcHandler], RpcHandler]: ...

    @overload
    def register_rpc_method(self, method_name: str, handler: RpcHandler) -> None: ...

    def register_rpc_method(
        self, method_name: str, handler: RpcHandler | None = None
    ) -> Callable[[RpcHandler], RpcHandler] | None:
        """Register a (sync or async) handler; usable as ``@lp.register_rpc_method("name")``."""
        if handler is None:

            def decorator(fn: RpcHandler) -> RpcHandler:
                self._data.register_rpc_method(method_name, fn)
                return fn

            return decorator
        self._data.register_rpc_method(method_name, handler)
        return None

    def unregister_rpc_method(self, method: str) -> None:
        self._data.unregister_rpc_method(method)

    async def publish_transcription(self, transcription: Transcription) -> None:
        """Send a ``transcription`` packet (raises PublishTranscriptionError)."""
        await self._data.publish_transcription(transcription)

    async def publish_dtmf(self, *, code: int, digit: str) -> None:
        """Send a SIP DTMF packet (raises PublishDTMFError)."""
        await self._data.publish_dtmf(code=code, digit=digit)


class RoomDataMixin:
    """Stream handler registration of the Room."""

    _data: DataManager

    def register_text_stream_handler(self, topic: str, handler: TextStreamHandler) -> None:
        """Call ``handler(reader, participant_identity)`` for each text stream on ``topic``.

        Raises ``ValueError`` if a handler is already registered for the topic.
        """
        self._data.register_text_stream_handler(topic, handler)

    def unregister_text_stream_handler(self, topic: str) -> None:
        self._data.unregister_text_stream_handler(topic)

    def register_byte_stream_handler(self, topic: str, handler: ByteStreamHandler) -> None:
        """Call ``handler(reader, participant_identity)`` for each byte stream on ``topic``."""
        self._data.register_byte_stream_handler(topic, handler)

    def unregister_byte_stream_handler(self, topic: str) -> None:
        self._data.unregister_byte_stream_handler(topic)
