"""The one door to other libraries' private internals.

Every private attribute access, class swap, monkeypatch and thread start on an object of
aiortc, aioice, asyncio's selector transport or pylibsrtp lives in this package, one
module per library, behind named functions. Each module states the pinned version it was
written for; :func:`check` (run on first use) says exactly what moved when a dependency
changes, and the callers fall back to the public path or raise
:class:`~aiolivekit.errors.AiortcCompatibilityError`.
"""
