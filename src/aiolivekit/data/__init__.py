"""The data layer: packets, text/byte streams, RPC, transcription and DTMF.

* ``streams`` -- stream infos, readers, writers and the sans-I/O stream assembler.
* ``rpc`` -- :class:`RpcError`, :class:`RpcInvocationData`, caller and callee tables.
* ``manager`` -- :class:`DataManager` (one per Room: routes incoming packets, sends
  streams/RPC) and the ``CLIENT_PROTOCOL`` level and capabilities the Room announces.
* ``api`` -- the public methods mixed into ``LocalParticipant`` and ``Room``.
* ``packets`` -- the DataPacket codec used by the engine.
"""

from __future__ import annotations

from .manager import CLIENT_CAPABILITIES, CLIENT_PROTOCOL, DataManager, DataSender
from .rpc import RpcError, RpcInvocationData
from .streams import (
    STREAM_CHUNK_SIZE,
    ByteStreamInfo,
    ByteStreamReader,
    ByteStreamWriter,
    TextStreamInfo,
    TextStreamReader,
    TextStreamWriter,
)

__all__ = [
    "CLIENT_CAPABILITIES",
    "CLIENT_PROTOCOL",
    "STREAM_CHUNK_SIZE",
    "ByteStreamInfo",
    "ByteStreamReader",
    "ByteStreamWriter",
    "DataManager",
    "DataSender",
    "RpcError",
    "RpcInvocationData",
    "TextStreamInfo",
    "TextStreamReader",
    "TextStreamWriter",
]
