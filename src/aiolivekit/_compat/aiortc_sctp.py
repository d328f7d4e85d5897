"""aiortc's SCTP transport internals (aiortc 1.16.0, pinned in pyproject.toml): the
remote ``a=max-message-size``, the reassembly of incoming data-channel messages and the
messages of a channel not yet acknowledged by the remote end."""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["limit_sctp_message_size", "sctp_max_message_size", "sctp_send_unchecked",
           "sctp_unacked_messages"]

logger = logging.getLogger(__name__)


def sctp_max_message_size(sctp: Any, default: int = 65536) -> int:
    """The largest message the remote SCTP end accepts (``_remote_max_message_size``)."""
    size = getattr(sctp, "_remote_max_message_size", default) if sctp is not None else default
    return int(size or default)


_QUEUES = ("_data_channel_queue", "_outbound_queue", "_sent_queue")
_LAST_FRAG = 0x01  # SCTP_DATA_LAST_FRAG
_DCEP = 50  # WEBRTC_DCEP: the channel's open handshake, not a message of the application


def sctp_unacked_messages(channel: Any) -> int | None:
    """How many messages sent on the ordered ``channel`` the remote SCTP end has not
    acknowledged (so, on an ordered stream, not delivered): the last ones sent.

    Counted over aiortc's ``_data_channel_queue`` (messages not yet cut into chunks),
    ``_outbound_queue`` (chunks not yet sent) and ``_sent_queue`` (chunks in flight: from
    the first one not acknowledged, every message that ends after it, since an ordered
    stream delivers nothing past a gap). ``None`` when the internals are not there.
    """
    transport = getattr(channel, "transport", None) if channel is not None else None
    if transport is None or any(not hasattr(transport, q) for q in _QUEUES):
        logger.debug("aiortc SCTP queues not found: unacknowledged messages unknown")
        return None
    count = sum(1 for item in transport._data_channel_queue
                if item[0] is channel and item[1] != _DCEP)
    stream_id = channel.id
    if stream_id is None:
        return count
    gap = False
    for chunk in list(transport._sent_queue) + list(transport._outbound_queue):
        if chunk.stream_id != stream_id or chunk.protocol == _DCEP:
            continue
        gap = gap or not getattr(chunk, "_acked", False)
        if gap and chunk.flags & _LAST_FRAG:
            count += 1
    return count


_SCTP_GUARDED: weakref.WeakSet[Any] = weakref.WeakSet()
_MAX_OPEN_MESSAGES = 1024


def limit_sctp_message_size(sctp: Any, max_size: int, on_exceed: Callable[[int], None],
                            max_total: int | None = None) -> None:
    """Refuse a data-channel message larger than ``max_size`` while it is reassembled.

    aiortc reassembles any message whatever ``a=max-message-size`` it advertised
    (``RTCSctpTransport._receive_data_chunk`` into ``_inbound_streams[...].reassembly``).
    An instance wrapper of ``_receive_data_chunk`` counts the bytes of each fragmented
    message (fragments have consecutive TSNs) and the bytes held in reassembly over all
    streams (``max_total``, default 4 x ``max_size``); past either bound the chunk is
    dropped and ``on_exceed(size)`` called once. ``on_exceed`` is held weakly if it is a
    bound method, and the wrapper holds the transport weakly: no reference cycle.
    """
    if sctp is None or sctp in _SCTP_GUARDED:
        return
    cls_receive = type(sctp)._receive_data_chunk
    transport_ref = weakref.ref(sctp)
    callback: Callable[[], Callable[[int], None] | None]
    if inspect.ismethod(on_exceed):
        callback = weakref.WeakMethod(on_exceed)  # type: ignore[arg-type]
    else:
        callback = lambda: on_exceed  # noqa: E731
    total_limit = max_total if max_total is not None else 4 * max_size
    open_sizes: dict[int, int] = {}  # next expected TSN -> bytes of the message so far
    tripped = False

    async def receive_data_chunk(chunk: Any) -> None:
        nonlocal tripped
        transport = transport_ref()
        if transport is None:
            return
        if tripped:
            return
        data_len = len(chunk.user_data)
        first = bool(chunk.flags & 0x02)  # SCTP_DATA_FIRST_FRAG
        last = bool(chunk.flags & 0x01)  # SCTP_DATA_LAST_FRAG
        size = data_len if first else open_sizes.pop(chunk.tsn, 0) + data_len
        held = sum(len(c.user_data) for s in transport._inbound_streams.values()
                   for c in s.reassembly) + data_len
        if size > max_size or held > total_limit:
            tripped = True
            logger.warning("SCTP: a data-channel message of at least %d bytes (%d held) "
                           "exceeds the advertised %d; refused", size, held, max_size)
            cb = callback()
            if cb is not None:
                cb(max(size, held))
            return
        if not last:
            if len(open_sizes) >= _MAX_OPEN_MESSAGES:
                open_sizes.pop(next(iter(open_sizes)))
            open_sizes[(chunk.tsn + 1) & 0xFFFFFFFF] = size
        await cls_receive(transport, chunk)

    sctp._receive_data_chunk = receive_data_chunk
    _SCTP_GUARDED.add(sctp)


def sctp_send_unchecked(channel: Any, data: bytes) -> None:
    """Send ``data`` on a data channel whatever ``a=max-message-size`` the remote end
    advertised (``RTCSctpTransport._remote_max_message_size`` zeroed for the call): what
    a hostile client does; for security probes only."""
    transport = channel.transport
    saved = transport._remote_max_message_size
    transport._remote_max_message_size = 0
    try:
        channel.send(data)
    finally:
        transport._remote_max_message_size = saved
