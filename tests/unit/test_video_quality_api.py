"""RemoteTrackPublication.set_video_quality: the official checks and UpdateTrackSettings."""

from __future__ import annotations

import pytest
from livekit.protocol import models as models_pb

from aiolivekit import RemoteTrackPublication, VideoQuality
from aiolivekit.engine import signal as sig


def _pub(kind: int, simulcast: bool, calls: list | None = None) -> RemoteTrackPublication:
    info = models_pb.TrackInfo(sid="TR_x", type=kind, simulcast=simulcast)
    cb = (lambda pub, q: calls.append((pub.sid, q))) if calls is not None else None
    return RemoteTrackPublication(info, "PA_p", None, cb)


def test_quality_requested_through_the_callback() -> None:
    calls: list = []
    pub = _pub(models_pb.TrackType.VIDEO, True, calls)
    pub.set_video_quality(VideoQuality.VIDEO_QUALITY_LOW)
    pub.set_video_quality(2)
    assert calls == [("TR_x", VideoQuality.VIDEO_QUALITY_LOW),
                     ("TR_x", VideoQuality.VIDEO_QUALITY_HIGH)]


def test_refused_like_the_official_sdk() -> None:
    with pytest.raises(ValueError, match="only supported on video"):
        _pub(models_pb.TrackType.AUDIO, True, []).set_video_quality(0)
    with pytest.raises(ValueError, match="simulcasted"):
        _pub(models_pb.TrackType.VIDEO, False, []).set_video_quality(0)
    with pytest.raises(ValueError, match="unknown video quality"):
        _pub(models_pb.TrackType.VIDEO, True, []).set_video_quality(3)  # OFF: not a layer
    with pytest.raises(ValueError, match="unknown video quality"):
        _pub(models_pb.TrackType.VIDEO, True, []).set_video_quality(7)
    with pytest.raises(RuntimeError, match="not connected"):
        _pub(models_pb.TrackType.VIDEO, True, None).set_video_quality(1)


def test_signal_request_carries_the_quality() -> None:
    s = sig.SignalSession()
    s.update_track_settings(["TR_x"], disabled=False, quality=1)
    s.update_track_settings(["TR_y"], disabled=True)
    reqs = [r.track_setting for r in s._outbox if r.WhichOneof("message") == "track_setting"]
    assert [(list(r.track_sids), r.disabled, r.quality) for r in reqs] == [
        (["TR_x"], False, models_pb.VideoQuality.MEDIUM), (["TR_y"], True, models_pb.VideoQuality.LOW)]
