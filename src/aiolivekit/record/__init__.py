"""Recording a room: ``aiolivekit record`` and :class:`Recorder` (docs/record.md).

Each subscribed track goes to its own file as it was received (Opus in Ogg, VP8 in WebM,
H.264 in MP4), optionally with a mix of the audio tracks; see :mod:`.recorder`.
"""

from __future__ import annotations

from .auth import recorder_token
from .files import RecordConnectError, RecordError
from .recorder import RecordedFile, Recorder

__all__ = ["RecordConnectError", "RecordError", "RecordedFile", "Recorder", "recorder_token"]
