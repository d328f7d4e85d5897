"""The shared WebRTC base: SDP, ICE host policy, STUN keepalive and consent, RTP headers,
the libsrtp fast path and peer-connection helpers. Imported by both wings (the client and
the server); imports neither."""
