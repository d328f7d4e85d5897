"""Access-token verification with the official server's HTTP statuses and messages.

The messages are those livekit-server 1.13.5 answers (checked against the binary), e.g.
``invalid API key: <key>``, ``invalid token: <jwt>, error: token has invalid claims: token
is expired``, ``no permissions to access the room`` (no ``video`` grant), ``permissions
denied`` (``roomJoin`` false). Unlike 1.13.5 a token without ``exp`` is refused.

Sans-I/O: the current time is passed in. ``verify_token`` checks the JWT (HS256 signature,
``exp`` required, ``nbf``, issuer = a known API key, 60 s leeway) and ``join_grant`` checks
what joining a room needs (``roomJoin``, identity, room name).
"""

from __future__ import annotations

import datetime
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from livekit import api

from ..errors import AioLiveKitError

__all__ = [
    "LEEWAY",
    "AuthError",
    "TokenClaims",
    "VideoGrant",
    "join_grant",
    "make_token",
    "refresh_token",
    "token_from_request",
    "verify_token",
]

logger = logging.getLogger(__name__)

LEEWAY = 60.0
MAX_NAME_LENGTH = 256


class AuthError(AioLiveKitError):
    """A request was refused; ``status`` is the HTTP status the official server would use."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class VideoGrant:
    """The ``video`` claim, with the official defaults for absent fields."""

    room_create: bool = False
    room_list: bool = False
    room_record: bool = False
    room_admin: bool = False
    room_join: bool = False
    room: str = ""
    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    can_publish_sources: list[str] = field(default_factory=list)
    can_update_own_metadata: bool = False
    hidden: bool = False
    recorder: bool = False
    agent: bool = False

    @classmethod
    def from_claim(cls, data: Mapping[str, Any]) -> VideoGrant:
        def flag(name: str, default: bool = False) -> bool:
            value = data.get(name)
            return default if value is None else bool(value)

        can_publish = flag("canPublish", True)
        sources = data.get("canPublishSources") or []
        return cls(
            room_create=flag("roomCreate"),
            room_list=flag("roomList"),
            room_record=flag("roomRecord"),
            room_admin=flag("roomAdmin"),
            room_join=flag("roomJoin"),
            room=str(data.get("room") or ""),
            can_publish=can_publish,
            can_subscribe=flag("canSubscribe", True),
            can_publish_data=flag("canPublishData", can_publish),
            can_publish_sources=[str(s) for s in sources] if isinstance(sources, list) else [],
            can_update_own_metadata=flag("canUpdateOwnMetadata"),
            hidden=flag("hidden"),
            recorder=flag("recorder"),
            agent=flag("agent"),
        )


@dataclass
class TokenClaims:
    """The verified claims of an access token."""

    api_key: str
    identity: str
    name: str = ""
    metadata: str = ""
    kind: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    video: VideoGrant | None = None
    expires_at: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict)


def token_from_request(
    authorization: str | None, query: Mapping[str, str]
) -> str | None:
    """Pick the token from the ``Authorization`` header (priority) or ``access_token``."""
    if authorization:
        if not authorization.startswith("Bearer "):
            raise AuthError(401, "invalid authorization header. Must start with Bearer ")
        return authorization[len("Bearer "):].strip()
    token = query.get("access_token")
    return token or None


def verify_token(token: str, keys: Mapping[str, str], now: float) -> TokenClaims:
    """Verify ``token`` against ``keys`` (API key -> secret) at time ``now`` (Unix seconds)."""
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthError(401, "invalid authorization token") from None
    if not isinstance(unverified, dict):
        raise AuthError(401, "invalid authorization token")
    issuer = unverified.get("iss")
    if not isinstance(issuer, str) or issuer not in keys:
        raise AuthError(401, f"invalid API key: {issuer if isinstance(issuer, str) else ''}")

    def invalid(why: str) -> AuthError:
        return AuthError(401, f"invalid token: {token}, error: {why}")

    if header.get("alg") != "HS256":
        raise invalid(f"token signature is invalid: signing method {header.get('alg')} is invalid")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # short dev secrets trigger InsecureKeyLengthWarning
            claims: dict[str, Any] = jwt.decode(
                token,
                key=keys[issuer],
                algorithms=["HS256"],
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "verify_aud": False, "verify_iss": False},
            )
    except jwt.InvalidSignatureError:
        raise invalid("token signature is invalid: signature is invalid") from None
    except jwt.PyJWTError as exc:
        raise invalid(f"token is malformed: {exc}") from None
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise invalid("token has invalid claims: token is missing required claim: "
                      "exp claim is required")
    if now > exp + LEEWAY:
        raise invalid("token has invalid claims: token is expired")
    nbf = claims.get("nbf")
    if nbf is not None:
        if not isinstance(nbf, (int, float)) or isinstance(nbf, bool):
            raise invalid("token has invalid claims: token has invalid number")
        if now + LEEWAY < nbf:
            raise invalid("token has invalid claims: token is not valid yet")
    identity = claims.get("sub") or claims.get("jti") or ""
    video_claim = claims.get("video")
    attributes = claims.get("attributes") or {}
    return TokenClaims(
        api_key=issuer,
        identity=str(identity),
        name=str(claims.get("name") or ""),
        metadata=str(claims.get("metadata") or ""),
        kind=str(claims.get("kind") or ""),
        attributes={str(k): str(v) for k, v in attributes.items()}
        if isinstance(attributes, dict)
        else {},
        video=VideoGrant.from_claim(video_claim) if isinstance(video_claim, dict) else None,
        expires_at=float(exp),
        raw=claims,
    )


REFRESH_MIN_TTL = 600.0


def refresh_token(claims: TokenClaims, secret: str, now: float) -> str:
    """A fresh token with the same claims, valid at least 10 minutes from ``now`` (the
    original expiry is kept when it is later), like the official ``refresh_token``."""
    payload = dict(claims.raw)
    payload["nbf"] = int(now)
    payload["iat"] = int(now)
    payload["exp"] = int(max(claims.expires_at, now + REFRESH_MIN_TTL))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jwt.encode(payload, secret, algorithm="HS256")


def join_grant(claims: TokenClaims | None) -> VideoGrant:
    """Check that ``claims`` allow joining a room; return the video grant."""
    if claims is None or claims.video is None:
        raise AuthError(401, "no permissions to access the room")
    if not claims.video.room_join:
        raise AuthError(401, "permissions denied")
    if not claims.identity:
        raise AuthError(400, "identity cannot be empty")
    if not claims.video.room:
        raise AuthError(400, "no room name")
    if len(claims.identity) > MAX_NAME_LENGTH:
        raise AuthError(400, "identity too long")
    if len(claims.video.room) > MAX_NAME_LENGTH:
        raise AuthError(400, "room name too long")
    return claims.video


def make_token(
    api_key: str,
    api_secret: str,
    identity: str,
    room: str = "test-room",
    *,
    name: str | None = None,
    metadata: str | None = None,
    attributes: dict[str, str] | None = None,
    can_publish: bool = True,
    can_subscribe: bool = True,
    can_publish_data: bool = True,
    can_update_metadata: bool = True,
    can_publish_sources: list[str] | None = None,
    hidden: bool = False,
    room_admin: bool = False,
    ttl: float = 3600,
) -> str:
    """Mint a join token for ``identity`` in ``room`` with livekit-api.

    Grants left at their defaults (``hidden``, ``roomAdmin`` false, no source list) are
    left out of the JWT.
    """
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=can_publish,
        can_subscribe=can_subscribe,
        can_publish_data=can_publish_data,
        can_update_own_metadata=can_update_metadata,
        can_publish_sources=list(can_publish_sources) if can_publish_sources is not None else None,
        hidden=hidden or None,
        room_admin=room_admin or None,
    )
    token = (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_grants(grants)
        .with_ttl(datetime.timedelta(seconds=ttl))
    )
    if name is not None:
        token = token.with_name(name)
    if metadata is not None:
        token = token.with_metadata(metadata)
    if attributes:
        token = token.with_attributes(attributes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short dev secrets trigger InsecureKeyLengthWarning
        return token.to_jwt()
