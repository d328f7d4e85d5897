"""Sans-I/O state of one participant and its tracks in a room of the dev server (ids,
track sources, permissions from the join grant, ``ParticipantInfo``)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from livekit.protocol import models as models_pb, rtc as rtc_pb

from .auth import VideoGrant

__all__ = [
    "ENABLED_PUBLISH_CODECS",
    "PARTICIPANT_KINDS",
    "SOURCE_CHARS",
    "ParticipantState",
    "TrackState",
    "codec_mime",
    "default_stream",
    "new_guid",
    "source_from_name",
]

_BASE57 = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

_SOURCE_NAMES = {
    "camera": models_pb.TrackSource.CAMERA,
    "microphone": models_pb.TrackSource.MICROPHONE,
    "screen_share": models_pb.TrackSource.SCREEN_SHARE,
    "screen_share_audio": models_pb.TrackSource.SCREEN_SHARE_AUDIO,
}
SOURCE_CHARS = {
    models_pb.TrackSource.CAMERA: "C",
    models_pb.TrackSource.MICROPHONE: "M",
    models_pb.TrackSource.SCREEN_SHARE: "S",
    models_pb.TrackSource.SCREEN_SHARE_AUDIO: "s",
}
PARTICIPANT_KINDS = {
    "standard": models_pb.ParticipantInfo.Kind.STANDARD,
    "ingress": models_pb.ParticipantInfo.Kind.INGRESS,
    "egress": models_pb.ParticipantInfo.Kind.EGRESS,
    "sip": models_pb.ParticipantInfo.Kind.SIP,
    "agent": models_pb.ParticipantInfo.Kind.AGENT,
}
ENABLED_PUBLISH_CODECS = ("audio/opus", "audio/red", "video/VP8", "video/H264")


def new_guid(prefix: str) -> str:
    """``prefix`` + 12 random characters of the shortuuid base57 alphabet."""
    return prefix + "".join(secrets.choice(_BASE57) for _ in range(12))


def source_from_name(name: str) -> int | None:
    return _SOURCE_NAMES.get(name)


@dataclass
class TrackState:
    """One track of a participant: pending (AddTrackRequest answered) or published (media)."""

    info: models_pb.TrackInfo
    cid: str
    published: bool = False
    codec_cids: list[str] = field(default_factory=list)


@dataclass
class ParticipantState:
    """One participant in a room."""

    sid: str
    identity: str
    grant: VideoGrant
    name: str = ""
    metadata: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    kind: int = models_pb.ParticipantInfo.Kind.STANDARD
    state: int = models_pb.ParticipantInfo.State.JOINING
    version: int = 0
    joined_at_ms: int = 0
    client_protocol: int = 0
    capabilities: list[int] = field(default_factory=list)
    auto_subscribe: bool = True
    tracks: dict[str, TrackState] = field(default_factory=dict)
    last_reliable_seq: int = 0
    disconnect_reason: int = models_pb.DisconnectReason.UNKNOWN_REASON
    permission: models_pb.ParticipantPermission = field(
        default_factory=models_pb.ParticipantPermission
    )
    # who may subscribe to this participant's tracks (C->S SubscriptionPermission);
    # None: everyone (the default until the participant sends one)
    track_permission: rtc_pb.SubscriptionPermission | None = None
    # signalling protocol of the client (``protocol`` query parameter)
    protocol: int = 0
    # the signal connection: False from its loss until a resume re-attaches one
    signal_connected: bool = True
    # when (Unix seconds) a participant without signal leaves for good
    departure_deadline: float | None = None
    # the room's departure counter when the signal was lost (DISCONNECTED updates on resume)
    signal_lost_mark: int = 0

    def allows(self, sub: ParticipantState, track_sid: str) -> bool:
        """May ``sub`` subscribe to this participant's track ``track_sid``?"""
        perm = self.track_permission
        if perm is None or perm.all_participants:
            return True
        for tp in perm.track_permissions:
            if (tp.participant_identity and tp.participant_identity == sub.identity) or (
                    tp.participant_sid and tp.participant_sid == sub.sid):
                return tp.all_tracks or track_sid in tp.track_sids
        return False

    def __post_init__(self) -> None:
        g = self.grant
        sources: Any = [
            s for s in (source_from_name(n) for n in g.can_publish_sources) if s is not None
        ]
        self.permission = models_pb.ParticipantPermission(
            can_subscribe=g.can_subscribe,
            can_publish=g.can_publish,
            can_publish_data=g.can_publish_data,
            can_publish_sources=sources,
            hidden=g.hidden,
            recorder=g.recorder,
            can_update_metadata=g.can_update_own_metadata,
            agent=g.agent,
        )

    @property
    def hidden(self) -> bool:
        return self.permission.hidden

    def bump(self) -> None:
        self.version += 1

    def published_tracks(self) -> list[TrackState]:
        return [t for t in self.tracks.values() if t.published]

    def info(self) -> models_pb.ParticipantInfo:
        out = models_pb.ParticipantInfo(
            sid=self.sid,
            identity=self.identity,
            state=self.state,  # type: ignore[arg-type]
            tracks=[t.info for t in self.published_tracks()],
            metadata=self.metadata,
            joined_at=self.joined_at_ms // 1000,
            joined_at_ms=self.joined_at_ms,
            name=self.name,
            version=self.version,
            permission=self.permission,
            is_publisher=bool(self.published_tracks()),
            kind=self.kind,  # type: ignore[arg-type]
            attributes=self.attributes,
            disconnect_reason=self.disconnect_reason,  # type: ignore[arg-type]
            client_protocol=self.client_protocol,
            capabilities=self.capabilities,  # type: ignore[arg-type]
        )
        return out

    def can_publish_source(self, source: int) -> bool:
        if not self.permission.can_publish:
            return False
        allowed = list(self.permission.can_publish_sources)
        return not allowed or source in allowed


def codec_mime(codec: str, is_audio: bool) -> str:
    """The mime type of a codec named in an AddTrackRequest (``vp8``, ``video/VP8``)."""
    c = codec.lower()
    if "/" in c:
        _, _, c = c.partition("/")
    names = {"vp8": "VP8", "h264": "H264", "vp9": "VP9", "av1": "AV1", "h265": "H265",
             "opus": "opus", "red": "red", "pcmu": "PCMU", "pcma": "PCMA"}
    return ("audio/" if is_audio else "video/") + names.get(c, codec)


def default_stream(source: int) -> str:
    """The stream name of a track whose AddTrackRequest names none."""
    if source in (models_pb.TrackSource.CAMERA, models_pb.TrackSource.MICROPHONE):
        return "camera"
    if source in (models_pb.TrackSource.SCREEN_SHARE, models_pb.TrackSource.SCREEN_SHARE_AUDIO):
        return "screen"
    return "unknown"


def track_info(req: rtc_pb.AddTrackRequest, track_sid: str, now: float) -> models_pb.TrackInfo:
    """The TrackInfo an AddTrackRequest announces (codecs, layers low to high, features)."""
    is_audio = req.type == models_pb.TrackType.AUDIO
    mime = "audio/opus" if is_audio else "video/VP8"
    codecs: list[models_pb.SimulcastCodecInfo] = []
    for c in req.simulcast_codecs:
        cmime = codec_mime(c.codec, is_audio)
        if not codecs:
            mime = cmime
        codecs.append(models_pb.SimulcastCodecInfo(mime_type=cmime, cid=c.cid or req.cid,
                                                   layers=c.layers))
    if not codecs:
        codecs.append(models_pb.SimulcastCodecInfo(mime_type=mime, cid=req.cid,
                                                   layers=req.layers))
    features = list(req.audio_features)
    if req.stereo and models_pb.AudioTrackFeature.TF_STEREO not in features:
        features.append(models_pb.AudioTrackFeature.TF_STEREO)
    if req.disable_dtx and models_pb.AudioTrackFeature.TF_NO_DTX not in features:
        features.append(models_pb.AudioTrackFeature.TF_NO_DTX)
    stream = req.stream or default_stream(req.source)
    return models_pb.TrackInfo(
        sid=track_sid,
        type=req.type,
        name=req.name,
        muted=req.muted,
        width=req.width,
        height=req.height,
        simulcast=len(req.layers) > 1,
        disable_dtx=req.disable_dtx,
        source=req.source,
        layers=sorted(req.layers, key=lambda layer: layer.quality),  # type: ignore[union-attr]
        mime_type=mime,
        codecs=codecs,
        stereo=req.stereo,
        disable_red=req.disable_red,
        encryption=req.encryption,
        stream=stream,
        version=models_pb.TimedVersion(unix_micro=int(now * 1e6)),
        audio_features=features,
        backup_codec_policy=req.backup_codec_policy,
        packet_trailer_features=req.packet_trailer_features,
    )


def quality_for_size(info: models_pb.TrackInfo, width: int, height: int) -> int:
    """The simulcast quality a subscriber showing ``width`` x ``height`` gets: the smallest
    layer at least that large, else the largest (as livekit-server)."""
    layers = sorted(info.layers, key=lambda layer: layer.width * layer.height)
    for layer in layers:
        if layer.width >= width and layer.height >= height:
            return int(layer.quality)
    return int(layers[-1].quality) if layers else int(models_pb.VideoQuality.HIGH)
