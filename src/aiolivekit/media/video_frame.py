"""``VideoFrame``: a raw picture in one of the ``VideoBufferType`` layouts, plus conversions.

Buffers are tightly packed (stride = width, chroma rounded up for odd sizes), as frames
created in Python are in ``livekit.rtc``. Packed RGB types are named by their byte order
in memory (``RGBA`` = R, G, B, A bytes). YUV uses BT.601 limited range, like libyuv.
Conversions are vectorised numpy; numpy is imported on first use only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..types import VideoBufferType

if TYPE_CHECKING:
    import numpy as np

__all__ = ["VideoFrame", "buffer_size"]

logger = logging.getLogger(__name__)

_PACKED_ORDER: dict[int, tuple[str, ...]] = {
    VideoBufferType.RGBA: ("r", "g", "b", "a"),
    VideoBufferType.BGRA: ("b", "g", "r", "a"),
    VideoBufferType.ARGB: ("a", "r", "g", "b"),
    VideoBufferType.ABGR: ("a", "b", "g", "r"),
    VideoBufferType.RGB24: ("r", "g", "b"),
}
_YUV_TYPES = (
    VideoBufferType.I420,
    VideoBufferType.I420A,
    VideoBufferType.I422,
    VideoBufferType.I444,
    VideoBufferType.I010,
    VideoBufferType.NV12,
)


def _plane_layout(type: int, width: int, height: int) -> list[tuple[int, int, int]]:
    """(offset, row length in bytes, rows) of each plane of a planar type; [] for packed."""
    cw, ch = (width + 1) // 2, (height + 1) // 2
    if type == VideoBufferType.I420:
        sizes = [(width, height), (cw, ch), (cw, ch)]
    elif type == VideoBufferType.I420A:
        sizes = [(width, height), (cw, ch), (cw, ch), (width, height)]
    elif type == VideoBufferType.I422:
        sizes = [(width, height), (cw, height), (cw, height)]
    elif type == VideoBufferType.I444:
        sizes = [(width, height)] * 3
    elif type == VideoBufferType.I010:
        sizes = [(width * 2, height), (cw * 2, ch), (cw * 2, ch)]
    elif type == VideoBufferType.NV12:
        sizes = [(width, height), (cw * 2, ch)]
    else:
        return []
    out = []
    off = 0
    for row, rows in sizes:
        out.append((off, row, rows))
        off += row * rows
    return out


def buffer_size(type: int, width: int, height: int) -> int:
    """Bytes needed for a tightly packed ``width`` x ``height`` frame of ``type``."""
    if type in _PACKED_ORDER:
        return width * height * len(_PACKED_ORDER[type])
    layout = _plane_layout(type, width, height)
    if not layout:
        raise ValueError(f"unsupported video buffer type: {type!r}")
    off, row, rows = layout[-1]
    return off + row * rows


def _as_buffer(data: Any) -> bytes | bytearray | memoryview:
    if isinstance(data, memoryview):
        if not data.contiguous:
            raise ValueError("data must be a contiguous buffer")
        return data.cast("B") if (data.format != "B" or data.ndim != 1) else data
    if isinstance(data, (bytes, bytearray)):
        return data
    raise TypeError(f"data must be bytes, bytearray or memoryview, not {type(data).__name__}")


class VideoFrame:
    """A raw video frame; ``data`` is kept by reference (not copied)."""

    __slots__ = ("_data", "_height", "_type", "_width")

    def __init__(
        self,
        width: int,
        height: int,
        type: int,
        data: bytes | bytearray | memoryview,
    ) -> None:
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError("width and height must be > 0")
        buf = _as_buffer(data)
        need = buffer_size(type, int(width), int(height))
        if len(buf) < need:
            raise ValueError(
                f"data too small for a {width}x{height} {VideoBufferType.Name(int(type))} frame: "
                f"{len(buf)} < {need} bytes"
            )
        self._width = int(width)
        self._height = int(height)
        self._type = VideoBufferType(int(type))
        self._data = buf

    @property
    def width(self) -> int:
        return self._width

    @property
    def height(self) -> int:
        return self._height

    @property
    def type(self) -> VideoBufferType:
        return self._type

    @property
    def data(self) -> memoryview:
        mv = memoryview(self._data)
        return mv.cast("B") if mv.format != "B" else mv

    def get_plane(self, plane_nth: int) -> memoryview | None:
        """The bytes of plane ``plane_nth`` of a planar frame; ``None`` if it has no such plane."""
        layout = _plane_layout(self._type, self._width, self._height)
        if plane_nth < 0 or plane_nth >= len(layout):
            return None
        off, row, rows = layout[plane_nth]
        return self.data[off : off + row * rows]

    def convert(self, type: int, *, flip_y: bool = False) -> VideoFrame:
        """A new frame in ``type`` (optionally flipped vertically); ``self`` is untouched."""
        dst = VideoBufferType(int(type))
        if dst not in _PACKED_ORDER and dst not in _YUV_TYPES:
            raise ValueError(f"unsupported video buffer type: {dst!r}")
        return _convert(self, dst, flip_y)

    @classmethod
    def __get_pydantic_core_schema__(cls, *_: Any) -> Any:
        """Pydantic support: a ``VideoFrame`` or a dict with ``width``, ``height``,
        ``type`` and base64 ``data`` (needs pydantic installed)."""
        import base64

        from pydantic_core import core_schema

        def validate(value: Any) -> VideoFrame:
            if isinstance(value, VideoFrame):
                return value
            if isinstance(value, dict):
                data = value["data"]
                raw = base64.b64decode(data) if isinstance(data, str) else data
                return VideoFrame(value["width"], value["height"], value["type"], raw)
            raise ValueError(f"cannot make a VideoFrame from {type(value).__name__}")

        def serialize(frame: VideoFrame) -> dict[str, Any]:
            size = buffer_size(frame.type, frame.width, frame.height)
            return {
                "width": frame.width,
                "height": frame.height,
                "type": int(frame.type),
                "data": base64.b64encode(frame.data[:size]).decode("ascii"),
            }

        return core_schema.no_info_plain_validator_function(
            validate, serialization=core_schema.plain_serializer_function_ser_schema(serialize)
        )

    def __repr__(self) -> str:
        return (
            f"rtc.VideoFrame(width={self._width}, height={self._height}, "
            f"type={VideoBufferType.Name(self._type)})"
        )


# --------------------------------------------------------------------------- conversion


def _planes(frame: VideoFrame) -> list[np.ndarray]:
    import numpy as np

    arr = np.frombuffer(frame.data, dtype=np.uint8)
    out = []
    for off, row, rows in _plane_layout(frame.type, frame.width, frame.height):
        out.append(arr[off : off + row * rows].reshape(rows, row))
    return out


def _down2(p: np.ndarray, sx: bool, sy: bool) -> np.ndarray:
    """Average 2x2 (or 2x1) blocks of an int32 plane, padding odd edges by replication."""
    import numpy as np

    h, w = p.shape
    if sy and h % 2:
        p = np.concatenate([p, p[-1:]], axis=0)
    if sx and w % 2:
        p = np.concatenate([p, p[:, -1:]], axis=1)
    if sy:
        p = p[0::2] + p[1::2]
    if sx:
        p = p[:, 0::2] + p[:, 1::2]
    div = (2 if sx else 1) * (2 if sy else 1)
    return (p + div // 2) // div


def _up2(p: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour upsampling of a chroma plane to ``height`` x ``width``."""
    h, w = p.shape
    if w < width:
        p = p.repeat(2, axis=1)
    if h < height:
        p = p.repeat(2, axis=0)
    return p[:height, :width]


def _to_yuv444(frame: VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Full-resolution int32 Y, U, V (8-bit scale) and optional alpha of any frame."""
    import numpy as np

    w, h, t = frame.width, frame.height, frame.type
    if t in _PACKED_ORDER:
        r, g, b, a = _to_rgb(frame)
        y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
        u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128
        v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128
        return y, u, v, a
    planes = _planes(frame)
    if t == VideoBufferType.I010:
        y16 = planes[0].view("<u2").astype(np.int32) >> 2
        u16 = planes[1].view("<u2").astype(np.int32) >> 2
        v16 = planes[2].view("<u2").astype(np.int32) >> 2
        return y16, _up2(u16, w, h), _up2(v16, w, h), None
    y = planes[0].astype(np.int32)
    if t == VideoBufferType.NV12:
        uv = planes[1].reshape(planes[1].shape[0], -1, 2)
        u, v = uv[..., 0].astype(np.int32), uv[..., 1].astype(np.int32)
    else:
        u, v = planes[1].astype(np.int32), planes[2].astype(np.int32)
    a = planes[3].astype(np.int32) if t == VideoBufferType.I420A else None
    return y, _up2(u, w, h), _up2(v, w, h), a


def _to_rgb(frame: VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    import numpy as np

    t = frame.type
    if t in _PACKED_ORDER:
        order = _PACKED_ORDER[t]
        arr = np.frombuffer(frame.data, dtype=np.uint8)[
            : frame.width * frame.height * len(order)
        ].reshape(frame.height, frame.width, len(order))
        ch = {name: arr[..., i].astype(np.int32) for i, name in enumerate(order)}
        return ch["r"], ch["g"], ch["b"], ch.get("a")
    y, u, v, a = _to_yuv444(frame)
    c = 298 * (y - 16) + 128
    d = u - 128
    e = v - 128
    r = np.clip((c + 409 * e) >> 8, 0, 255)
    g = np.clip((c - 100 * d - 208 * e) >> 8, 0, 255)
    b = np.clip((c + 516 * d) >> 8, 0, 255)
    return r, g, b, a


def _convert(frame: VideoFrame, dst: VideoBufferType, flip_y: bool) -> VideoFrame:
    import numpy as np

    w, h = frame.width, frame.height
    src = frame.type
    if src == dst and not flip_y:
        return VideoFrame(w, h, dst, bytearray(frame.data[: buffer_size(dst, w, h)]))
    if dst in _PACKED_ORDER:
        r, g, b, a = _to_rgb(frame)
        if a is None:
            a = np.full((h, w), 255, dtype=np.int32)
        ch = {"r": r, "g": g, "b": b, "a": a}
        out = np.empty((h, w, len(_PACKED_ORDER[dst])), dtype=np.uint8)
        for i, name in enumerate(_PACKED_ORDER[dst]):
            out[..., i] = ch[name]
        if flip_y:
            out = out[::-1]
        return VideoFrame(w, h, dst, bytearray(np.ascontiguousarray(out).tobytes()))

    y, u, v, a = _to_yuv444(frame)
    if flip_y:
        y, u, v = y[::-1], u[::-1], v[::-1]
        a = a[::-1] if a is not None else None
    y, u, v = np.clip(y, 0, 255), np.clip(u, 0, 255), np.clip(v, 0, 255)
    if dst in (VideoBufferType.I420, VideoBufferType.I420A, VideoBufferType.NV12, VideoBufferType.I010):
        u, v = _down2(u, True, True), _down2(v, True, True)
    elif dst == VideoBufferType.I422:
        u, v = _down2(u, True, False), _down2(v, True, False)
    if dst == VideoBufferType.I010:
        parts = [(p.astype("<u2") << 2).tobytes() for p in (y, u, v)]
    elif dst == VideoBufferType.NV12:
        uv = np.stack([u, v], axis=-1).astype(np.uint8)
        parts = [y.astype(np.uint8).tobytes(), uv.tobytes()]
    else:
        parts = [p.astype(np.uint8).tobytes() for p in (y, u, v)]
        if dst == VideoBufferType.I420A:
            alpha = a if a is not None else np.full((h, w), 255, dtype=np.int32)
            parts.append(alpha.astype(np.uint8).tobytes())
    return VideoFrame(w, h, dst, bytearray(b"".join(parts)))
