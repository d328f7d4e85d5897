"""Sans-I/O naming of a recording's files and its progress line.

A track's file is ``<identity>_<track sid>.<ext>`` in the output directory: characters
other than letters, digits, ``.``, ``_`` and ``-`` become ``_``, a leading dot too (no
hidden files, no path outside the directory), at most ``MAX_PART`` characters per part;
a name used already in this recording (the same track subscribed again) gets ``-2``,
``-3``... before the extension.
"""

from __future__ import annotations

__all__ = ["FileNamer", "container_for", "format_bytes", "format_progress", "safe_part"]

MAX_PART = 80

# codec -> (container format for PyAV or "ogg", file extension)
_CONTAINERS = {
    ("opus", "ogg"): ("ogg", "ogg"),
    ("vp8", "webm"): ("webm", "webm"),
    ("vp8", "mkv"): ("matroska", "mkv"),
    ("h264", "mp4"): ("mp4", "mp4"),
    ("h264", "mkv"): ("matroska", "mkv"),
}


def container_for(codec: str, choice: str) -> tuple[str, str]:
    """``(format, extension)`` for ``codec`` in the container ``choice``; ``ValueError``
    for a codec we do not record or a container that cannot hold it."""
    found = _CONTAINERS.get((codec, choice))
    if found is None:
        raise ValueError(f"cannot record {codec!r} into {choice!r}")
    return found


def safe_part(text: str, fallback: str) -> str:
    out = "".join(c if (c.isalnum() or c in "._-") else "_" for c in text)[:MAX_PART]
    if out.startswith("."):
        out = "_" + out[1:]
    return out or fallback


class FileNamer:
    """Unique, safe file names inside one output directory."""

    def __init__(self, taken: set[str] | None = None) -> None:
        self._taken = set(taken or ())

    def name(self, identity: str, track_sid: str, ext: str) -> str:
        """``<identity>_<track sid>.<ext>``, made safe and unique."""
        stem = f"{safe_part(identity, 'participant')}_{safe_part(track_sid, 'track')}"
        return self._unique(stem, ext)

    def plain(self, filename: str) -> str:
        """``filename`` (e.g. ``mix.wav``), or ``mix-2.wav``... when it is taken."""
        stem, _, ext = filename.rpartition(".")
        return self._unique(safe_part(stem, "file"), ext)

    def _unique(self, stem: str, ext: str) -> str:
        candidate = f"{stem}.{ext}"
        n = 1
        while candidate in self._taken:
            n += 1
            candidate = f"{stem}-{n}.{ext}"
        self._taken.add(candidate)
        return candidate


def format_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover


def format_progress(elapsed: float, audio: int, video: int, files: int, size: int,
                    duration: float | None = None) -> str:
    """``recording 0:03.2 / 0:05.0  tracks 1 audio, 1 video  files 2  41.3 kB``."""
    def clock(t: float) -> str:
        minutes, seconds = divmod(max(0.0, t), 60)
        return f"{int(minutes)}:{seconds:04.1f}"

    total = f" / {clock(duration)}" if duration is not None else ""
    return (f"recording {clock(elapsed)}{total}  tracks {audio} audio, {video} video  "
            f"files {files}  {format_bytes(size)}")
