"""Which simulcast layers a video track is published with (sans-I/O).

The official SDKs' rule: presets are picked by aspect ratio (16:9 or 4:3), the two lower
ones are the default simulcast layers, and how many layers a track gets depends on its
size: the larger side >= 960 gets three (low, mid, the original), >= 480 two (low, the
original), anything smaller one. Layers are ordered low to high and named by the rids
``q``, ``h``, ``f`` in that order; ``q`` is ``VIDEO_QUALITY_LOW``, ``h`` ``MEDIUM``, ``f``
``HIGH``. A lower layer keeps the track's aspect ratio: its size is the original divided
by the factor that brings the shorter side to the preset's.
"""

from __future__ import annotations

from dataclasses import dataclass

from livekit.protocol import models as models_pb

__all__ = [
    "PRESETS_43",
    "PRESETS_169",
    "RIDS",
    "LayerSpec",
    "quality_of_rid",
    "simulcast_layers",
    "video_layers",
]

RIDS = ("q", "h", "f")


@dataclass(frozen=True)
class VideoPreset:
    """A preset layer: size, bitrate cap (bit/s) and frame rate cap."""

    width: int
    height: int
    max_bitrate: int
    max_framerate: float


# the official SDK's (livekit Rust) presets: what its q and h layers carry (its q layer
# measured at 15 fps in bench_video, next to ours)
PRESETS_169 = (VideoPreset(320, 180, 160_000, 15.0), VideoPreset(640, 360, 450_000, 20.0))
PRESETS_43 = (VideoPreset(240, 180, 100_000, 15.0), VideoPreset(480, 360, 225_000, 20.0))


@dataclass(frozen=True)
class LayerSpec:
    """One layer to encode: its rid, quality, size, bitrate and frame rate caps."""

    rid: str
    quality: int  # models_pb.VideoQuality
    width: int
    height: int
    max_bitrate: int
    max_framerate: float


def quality_of_rid(rid: str) -> int:
    """``VIDEO_QUALITY_LOW`` for ``q``, ``MEDIUM`` for ``h``, ``HIGH`` for ``f``."""
    return {"q": models_pb.VideoQuality.LOW, "h": models_pb.VideoQuality.MEDIUM,
            "f": models_pb.VideoQuality.HIGH}.get(rid, models_pb.VideoQuality.HIGH)


def _scaled(width: int, height: int, preset: VideoPreset) -> tuple[int, int]:
    """The original size scaled down so that its shorter side is the preset's."""
    factor = max(1.0, min(width, height) / min(preset.width, preset.height))
    return max(2, int(width / factor) & ~1), max(2, int(height / factor) & ~1)


def simulcast_layers(width: int, height: int, max_bitrate: int,
                     max_framerate: float) -> list[LayerSpec]:
    """The layers for a ``width`` x ``height`` track whose top layer is capped at
    ``max_bitrate`` and ``max_framerate``; one layer (``q``, the original) when it is too
    small for simulcast. Raises ``ValueError`` for a size that is not positive."""
    if width <= 0 or height <= 0:
        raise ValueError(f"simulcast needs the track's size, got {width}x{height}")
    aspect = max(width, height) / min(width, height)
    presets = PRESETS_169 if abs(aspect - 16 / 9) < abs(aspect - 4 / 3) else PRESETS_43
    size = max(width, height)
    chosen: list[VideoPreset]
    if size >= 960:
        chosen = [presets[0], presets[1]]
    elif size >= 480:
        chosen = [presets[0]]
    else:
        chosen = []
    layers: list[VideoPreset] = []
    for preset in chosen:
        w, h = _scaled(width, height, preset)
        if w < width and h < height:
            layers.append(VideoPreset(w, h, preset.max_bitrate, preset.max_framerate))
    layers.append(VideoPreset(width, height, max_bitrate, max_framerate))
    return [LayerSpec(RIDS[i], quality_of_rid(RIDS[i]), p.width, p.height,
                      p.max_bitrate, p.max_framerate) for i, p in enumerate(layers)]


def video_layers(layers: list[LayerSpec]) -> list[models_pb.VideoLayer]:
    """The ``VideoLayer`` s an ``AddTrackRequest`` declares for ``layers``."""
    return [models_pb.VideoLayer(quality=layer.quality, width=layer.width,  # type: ignore[arg-type]
                                 height=layer.height, bitrate=layer.max_bitrate,
                                 rid=layer.rid)
            for layer in layers]
