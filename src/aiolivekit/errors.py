"""The exception tree of aiolivekit.

* :class:`AioLiveKitError` -- base of everything this package raises on purpose.
    * :class:`ConnectError` -- joining failed (bad token, no room, signal or ICE timeout).
    * :class:`PublishTrackError`, :class:`UnpublishTrackError` -- media publication.
    * :class:`PublishDataError`, :class:`PublishDTMFError`,
      :class:`PublishTranscriptionError` -- data packets refused before or while sending.
    * :class:`RpcError` -- a remote procedure call failed (carries a code, message, data).
    * :class:`StreamError` -- a text/byte stream ended abnormally (also a ``ConnectionError``).
    * :class:`SignalError` -- the signalling connection broke or sent something invalid.
    * :class:`AiortcCompatibilityError` -- an installed dependency (aiortc, aioice,
      pylibsrtp, asyncio) lacks a private hook that ``aiolivekit._compat`` relies on.
    * :class:`UnsupportedOptionError` -- an option aiolivekit cannot honour was asked for
      (also a ``NotImplementedError``); raised before any network I/O it would affect.
"""

from __future__ import annotations

__all__ = [
    "AioLiveKitError",
    "AiortcCompatibilityError",
    "ConnectError",
    "PublishDTMFError",
    "PublishDataError",
    "PublishTrackError",
    "PublishTranscriptionError",
    "SignalError",
    "StreamError",
    "UnpublishTrackError",
    "UnsupportedOptionError",
]


class AioLiveKitError(Exception):
    """Base class of the errors raised by aiolivekit."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConnectError(AioLiveKitError):
    """Connecting to a room failed.

    ``status`` is the HTTP status the server answered with (401, 404, ...) when the
    failure came from the server, ``None`` for timeouts and transport errors.
    ``reason`` is a short machine-readable tag: ``"unauthorized"``, ``"not_found"``,
    ``"bad_request"``, ``"server_error"``, ``"signal_timeout"``, ``"ice_timeout"``,
    ``"leave"``, ``"transport"``, ``"no_relay"`` (relay-only ICE without a TURN server).
    """

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class SignalError(AioLiveKitError):
    """The signalling connection failed or the peer broke the protocol."""


class PublishTrackError(AioLiveKitError):
    """``publish_track`` failed (refused by the server, timed out, not connected)."""


class UnpublishTrackError(AioLiveKitError):
    """``unpublish_track`` failed (unknown track sid, not connected)."""


class PublishDataError(AioLiveKitError):
    """A data packet was refused before sending (too large, not connected)."""


class PublishDTMFError(AioLiveKitError):
    """A DTMF packet could not be sent."""


class PublishTranscriptionError(AioLiveKitError):
    """A transcription packet could not be sent."""


class StreamError(AioLiveKitError, ConnectionError):
    """A text or byte stream ended abnormally (sender left, aborted, too large)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class AiortcCompatibilityError(AioLiveKitError):
    """An installed dependency lacks a private hook that ``aiolivekit._compat`` relies on
    (the message names the library, its version, the pinned version and what moved)."""


class UnsupportedOptionError(AioLiveKitError, NotImplementedError):
    """An option was given a value aiolivekit cannot honour (yet).

    ``option`` names it (``"TrackPublishOptions.video_codec"``), ``value`` is what was
    asked, ``issue`` the aiolivekit issue that will bring the feature (``None`` when none
    is planned). See docs/options.md for every option and what aiolivekit does with it.
    """

    def __init__(self, option: str, value: object, *, issue: int | None = None,
                 detail: str = "") -> None:
        plan = f"see aiolivekit issue {issue}" if issue is not None else "not planned yet"
        text = f"{option}={value!r} is not supported by aiolivekit ({plan})"
        if detail:
            text += f": {detail}"
        super().__init__(text)
        self.option = option
        self.value = value
        self.issue = issue
