"""The smaller examples of the track-publications spec, run one after the other.

Publishes an audio track (DTX/RED options) and a video track (VP8, 3 Mbps), waits for a
subscriber, then applies the subscription snippets to the first remote participant and
prints its publications.

    LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_TOKEN=... python examples/publication_snippets.py
"""

import asyncio
import os

from aiolivekit import (
    AudioSource,
    EncryptionType,
    LocalAudioTrack,
    LocalVideoTrack,
    RemoteParticipant,
    RemoteTrackPublication,
    Room,
    TrackKind,
    TrackPublication,
    TrackPublishOptions,
    TrackSource,
    VideoCodec,
    VideoEncoding,
    VideoSource,
)

url = os.environ.get("LIVEKIT_URL", "ws://127.0.0.1:7880")
token = os.environ.get("LIVEKIT_TOKEN", "")


async def publish_audio(local):
    # Create audio track
    source = AudioSource(48000, 1)
    track = LocalAudioTrack.create_audio_track("microphone", source)

    # Configure options
    options = TrackPublishOptions()
    options.source = TrackSource.SOURCE_MICROPHONE
    options.dtx = True  # Enable DTX for bandwidth efficiency during silence
    options.red = True  # Enable redundant encoding for packet loss recovery

    # Publish
    publication = await local.publish_track(track, options)
    print(f"Published: {publication.sid}")
    print(f"Name: {publication.name}")
    print(f"MIME type: {publication.mime_type}")  # "audio/opus"
    print(f"Kind: {publication.kind}")  # KIND_AUDIO
    print(f"Source: {publication.source}")  # SOURCE_MICROPHONE
    return publication, source


async def publish_video(local):
    # Create video track
    source = VideoSource(1920, 1080)
    track = LocalVideoTrack.create_video_track("camera", source)

    # Configure options
    options = TrackPublishOptions()
    options.video_codec = VideoCodec.VP8
    options.simulcast = True
    options.source = TrackSource.SOURCE_CAMERA

    # Set encoding parameters
    encoding = VideoEncoding()
    encoding.max_bitrate = 3_000_000  # 3 Mbps
    encoding.max_framerate = 30.0
    options.video_encoding = encoding

    # Publish
    publication = await local.publish_track(track, options)
    print(f"Published: {publication.sid}")
    print(f"Name: {publication.name}")
    print(f"Dimensions: {publication.width}x{publication.height}")
    print(f"Simulcast: {publication.simulcasted}")
    print(f"MIME type: {publication.mime_type}")  # "video/vp8"
    return publication, source


def subscribe_all(participant: RemoteParticipant):
    # Subscribe to all tracks
    for track_sid, publication in participant.track_publications.items():
        if isinstance(publication, RemoteTrackPublication):
            print(f"Subscribing to: {publication.name}")
            publication.set_subscribed(True)

    # Check subscription status
    for track_sid, publication in participant.track_publications.items():
        if isinstance(publication, RemoteTrackPublication):
            status = "subscribed" if publication.subscribed else "not subscribed"
            print(f"{publication.name}: {status}")


def subscribe_selectively(participant: RemoteParticipant):
    # Subscribe only to camera video (not screen share)
    for publication in participant.track_publications.values():
        if isinstance(publication, RemoteTrackPublication):
            should_subscribe = (
                publication.kind == TrackKind.KIND_VIDEO and
                publication.source == TrackSource.SOURCE_CAMERA
            )
            publication.set_subscribed(should_subscribe)

    # Subscribe only to microphone audio
    for publication in participant.track_publications.values():
        if isinstance(publication, RemoteTrackPublication):
            should_subscribe = (
                publication.kind == TrackKind.KIND_AUDIO and
                publication.source == TrackSource.SOURCE_MICROPHONE
            )
            publication.set_subscribed(should_subscribe)


def unsubscribe(participant: RemoteParticipant):
    # Unsubscribe from all tracks of a participant
    for publication in participant.track_publications.values():
        if isinstance(publication, RemoteTrackPublication):
            publication.set_subscribed(False)

    # Unsubscribe from specific track
    specific_pub = participant.track_publications.get("TR_XXXXX")
    if specific_pub and isinstance(specific_pub, RemoteTrackPublication):
        specific_pub.set_subscribed(False)


def print_info(publication: TrackPublication):
    # Basic info
    print(f"SID: {publication.sid}")
    print(f"Name: {publication.name}")
    print(f"Kind: {publication.kind}")
    print(f"Source: {publication.source}")
    print(f"Muted: {publication.muted}")

    # Video-specific (returns 0 for audio)
    if publication.kind == TrackKind.KIND_VIDEO:
        print(f"Dimensions: {publication.width}x{publication.height}")
        print(f"Simulcast: {publication.simulcasted}")

    # MIME type and codec
    print(f"MIME type: {publication.mime_type}")
    # Examples: "audio/opus", "video/vp8", "video/h264"

    # Encryption
    print(f"Encryption: {publication.encryption_type}")
    if publication.encryption_type != EncryptionType.NONE:
        print("Track is end-to-end encrypted")

    # Audio features
    if publication.kind == TrackKind.KIND_AUDIO:
        print(f"Audio features: {publication.audio_features}")


async def main():
    room = Room()
    await room.connect(url, token)
    local = room.local_participant

    audio_pub, audio_source = await publish_audio(local)
    video_pub, video_source = await publish_video(local)

    # Publish track
    publication = audio_pub

    # Wait until at least one participant subscribes
    print("Waiting for subscription...")
    await publication.wait_for_subscription()
    print("Track is now being received by at least one participant")

    # Now safe to proceed with operations requiring audience
    for participant in list(room.remote_participants.values()):
        subscribe_all(participant)
        subscribe_selectively(participant)
        for publication in participant.track_publications.values():
            print_info(publication)
        unsubscribe(participant)

    await local.unpublish_track(audio_pub.sid)
    await local.unpublish_track(video_pub.sid)
    await audio_source.aclose()
    await video_source.aclose()
    await room.disconnect()
    print("done")


if __name__ == "__main__":
    asyncio.run(main())
