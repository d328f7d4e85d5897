import aiolivekit
from aiolivekit import (
    EncryptionType,
    TrackKind,
    TrackPublishOptions,
    TrackSource,
    VideoCodec,
    VideoEncoding,
    rtc,
)


def test_enum_values_match_livekit_rtc() -> None:
    assert TrackKind.KIND_AUDIO == 1 and TrackKind.KIND_VIDEO == 2
    assert TrackSource.SOURCE_SCREENSHARE_AUDIO == 4
    assert VideoCodec.H264 == 1 and EncryptionType.GCM == 1
    assert TrackKind.Name(2) == "KIND_VIDEO"
    assert TrackSource.Value("SOURCE_MICROPHONE") == 2
    assert ("KIND_AUDIO", 1) in TrackKind.items()


def test_enum_name_unknown_value_raises() -> None:
    import pytest

    with pytest.raises(ValueError):
        TrackKind.Name(99)
    with pytest.raises(ValueError):
        TrackKind.Value("NOPE")


def test_publish_options_like_the_seed() -> None:
    options = TrackPublishOptions()
    options.video_codec = VideoCodec.VP8
    options.simulcast = True
    options.source = TrackSource.SOURCE_CAMERA
    encoding = VideoEncoding()
    encoding.max_bitrate = 2_000_000
    encoding.max_framerate = 30.0
    options.video_encoding = encoding
    assert options.video_encoding.max_bitrate == 2_000_000
    options.video_encoding.max_framerate = 15.0
    assert encoding.max_framerate == 15.0
    kw = TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE, dtx=True, red=True)
    assert kw.dtx and kw.red and kw.source == TrackSource.SOURCE_MICROPHONE
    assert not kw.simulcast and kw.video_encoding.max_bitrate == 0
    copy = TrackPublishOptions()
    copy.CopyFrom(kw)
    assert copy.dtx and copy.source == TrackSource.SOURCE_MICROPHONE


def test_rtc_namespace_and_top_level_are_the_same_objects() -> None:
    assert rtc.TrackPublishOptions is aiolivekit.TrackPublishOptions
    assert "Room" in rtc.__all__ and "TrackPublishOptions" in dir(rtc)


def test_enum_value_type_is_int_as_on_protobuf_wrappers() -> None:
    # livekit-agents checks ``isinstance(source, rtc.TrackSource.ValueType)`` at run time
    from aiolivekit import TrackSource
    from aiolivekit.types_ext import DegradationPreference

    assert TrackSource.ValueType is int and DegradationPreference.ValueType is int
    assert isinstance(TrackSource.SOURCE_MICROPHONE, TrackSource.ValueType)
    assert isinstance(2, TrackSource.ValueType) and not isinstance("2", TrackSource.ValueType)
    assert "ValueType" not in TrackSource.__members__
    assert [m.name for m in TrackSource][:2] == ["SOURCE_UNKNOWN", "SOURCE_CAMERA"]
