"""Track publications: the complete example of the track-publications spec, on aiolivekit.

Publishes a microphone track, waits for a subscriber, subscribes selectively (camera and
microphone only) to what others publish, prints every publication, then cleans up.

    LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_TOKEN=... python examples/track_publications.py

``EXAMPLE_DURATION`` (seconds, default 30) is how long it stays in the room.
"""

import asyncio
import os

from aiolivekit import (
    AudioSource,
    LocalAudioTrack,
    LocalParticipant,
    LocalTrackPublication,
    RemoteParticipant,
    RemoteTrackPublication,
    Room,
    RoomOptions,
    Track,
    TrackKind,
    TrackPublishOptions,
    TrackSource,
)

url = os.environ.get("LIVEKIT_URL", "ws://127.0.0.1:7880")
token = os.environ.get("LIVEKIT_TOKEN", "")
duration = float(os.environ.get("EXAMPLE_DURATION", "30"))


async def main():
    room = Room()

    # Handle remote track publications
    @room.on("track_published")
    def on_track_published(
        publication: RemoteTrackPublication,
        participant: RemoteParticipant
    ):
        print(f"Track published by {participant.identity}:")
        print(f"  Name: {publication.name}")
        print(f"  SID: {publication.sid}")
        print(f"  Kind: {publication.kind}")
        print(f"  Source: {publication.source}")
        print(f"  MIME: {publication.mime_type}")

        if publication.kind == TrackKind.KIND_VIDEO:
            print(f"  Resolution: {publication.width}x{publication.height}")
            print(f"  Simulcast: {publication.simulcasted}")

        # Selective subscription
        # Auto-subscribe to camera and microphone only
        if publication.source in [
            TrackSource.SOURCE_CAMERA,
            TrackSource.SOURCE_MICROPHONE
        ]:
            print(f"  -> Subscribing")
            publication.set_subscribed(True)
        else:
            print(f"  -> Not subscribing")

    @room.on("track_subscribed")
    def on_track_subscribed(
        track: Track,
        publication: RemoteTrackPublication,
        participant: RemoteParticipant
    ):
        print(f"Subscribed to {publication.name} from {participant.identity}")
        print(f"  MIME type: {publication.mime_type}")
        print(f"  Muted: {publication.muted}")
        print(f"  Encryption: {publication.encryption_type}")

    @room.on("track_unsubscribed")
    def on_track_unsubscribed(
        track: Track,
        publication: RemoteTrackPublication,
        participant: RemoteParticipant
    ):
        print(f"Unsubscribed from {publication.name}")

    # Connect with manual subscription
    await room.connect(
        url,
        token,
        RoomOptions(auto_subscribe=False)  # Manual subscription control
    )

    local: LocalParticipant = room.local_participant

    # Publish audio track
    source = AudioSource(48000, 1)
    track = LocalAudioTrack.create_audio_track("mic", source)

    options = TrackPublishOptions()
    options.source = TrackSource.SOURCE_MICROPHONE
    options.dtx = True
    options.red = True

    publication: LocalTrackPublication = await local.publish_track(
        track,
        options
    )

    print(f"Published local track: {publication.sid}")
    print(f"  Name: {publication.name}")
    print(f"  Kind: {publication.kind}")
    print(f"  MIME: {publication.mime_type}")

    # Wait for at least one subscriber
    print("Waiting for subscription...")
    await publication.wait_for_subscription()
    print("Track is now being received!")

    # Monitor remote participants' tracks
    for identity, participant in room.remote_participants.items():
        print(f"\nParticipant: {identity}")
        for sid, pub in participant.track_publications.items():
            if isinstance(pub, RemoteTrackPublication):
                print(f"  {pub.name} ({sid})")
                print(f"    Kind: {pub.kind}")
                print(f"    Source: {pub.source}")
                print(f"    Subscribed: {pub.subscribed}")
                print(f"    Muted: {pub.muted}")
                if pub.kind == TrackKind.KIND_VIDEO:
                    print(f"    Resolution: {pub.width}x{pub.height}")

    # Keep running
    await asyncio.sleep(duration)

    # Cleanup
    await local.unpublish_track(publication.sid)
    await source.aclose()
    await room.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
