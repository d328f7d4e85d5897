"""The recorder's join token."""

from __future__ import annotations

import datetime
import uuid
import warnings

__all__ = ["recorder_token"]


def recorder_token(api_key: str, api_secret: str, room: str, *,
                   identity: str | None = None, ttl: float = 6 * 3600) -> str:
    """A join token for a recorder: hidden, subscribe only (no publishing, no data)."""
    from livekit import api

    grants = api.VideoGrants(room_join=True, room=room, can_subscribe=True, can_publish=False,
                             can_publish_data=False, hidden=True, recorder=True)
    token = (api.AccessToken(api_key, api_secret)
             .with_identity(identity or f"recorder-{uuid.uuid4().hex[:8]}")
             .with_grants(grants).with_ttl(datetime.timedelta(seconds=ttl)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short dev secrets warn
        return str(token.to_jwt())
