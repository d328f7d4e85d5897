"""pytest plugin for users of aiolivekit: an in-process LiveKit dev server fixture."""
