"""Drive the official ``livekit`` Python SDK (Rust FFI) from a JSON script.

Run by the official venv's python (never imported by the test process)::

    official-venv/bin/python official_py.py '<json script>'     # or '-' to read it from stdin

Script: ``{"deadline": 60, "steps": [{"op": "connect", "url": ..., "token": ...}, ...]}``.
Output: one JSON object per line. Step results carry ``"op"`` (and ``"ok"``); things that
happen on their own carry ``"event"``. The last line is ``{"event": "done", ...}``, or
``{"event": "deadline"}`` when the global deadline fired. The process always ends with
``os._exit`` (the SDK may abort at interpreter exit otherwise).

The step language is shared with ``node_driver.mjs`` and ``browser_driver.mjs``; see
``tests/interop/README.md``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import sys
import threading
import time
from typing import Any

import numpy as np
from livekit import rtc

T0 = time.monotonic()
_print_lock = threading.Lock()


def emit(obj: dict[str, Any]) -> None:
    obj.setdefault("t", round(time.monotonic() - T0, 3))
    line = json.dumps(obj, default=str)
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _payload_bytes(step: dict[str, Any]) -> bytes:
    if "payload_b64" in step:
        return base64.b64decode(step["payload_b64"])
    payload = step.get("payload", "")
    if "repeat" in step:
        payload = payload * int(step["repeat"])
    return payload.encode("utf-8")


def _describe(data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"size": len(data)}
    try:
        text = data.decode("utf-8")
        out["payload"] = text if len(text) <= 4096 else text[:64] + "..."
    except UnicodeDecodeError:
        pass
    if len(data) <= 4096:
        out["payload_b64"] = base64.b64encode(data).decode()
    else:
        import hashlib

        out["sha256"] = hashlib.sha256(data).hexdigest()
    return out


def dominant_frequency(samples: np.ndarray, sample_rate: int) -> float:
    """Frequency (Hz) of the strongest bin of a Hann-windowed spectrum, refined by a parabola."""
    x = samples.astype(np.float64)
    x = x - x.mean()
    if len(x) < 256 or not np.any(x):
        return 0.0
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spec[0] = 0.0
    k = int(np.argmax(spec))
    if 0 < k < len(spec) - 1:
        a, b, c = spec[k - 1], spec[k], spec[k + 1]
        denom = a - 2 * b + c
        k = k + (0.5 * (a - c) / denom if denom != 0 else 0.0)  # type: ignore[assignment]
    return float(k * sample_rate / len(x))


def _tone_report(pcm: np.ndarray, rate: int, elapsed: float, max_gap: float) -> dict[str, Any]:
    """What ``monitor_tone_stop`` returns (the same fields in the JS drivers)."""
    block = rate // 100
    n = len(pcm) // block
    x = pcm[: n * block].astype(np.float64).reshape(n, block) if n else np.zeros((0, block))
    rms = np.sqrt(np.mean(x**2, axis=1)) if n else np.zeros(0)
    return {
        "rate": rate,
        "samples": len(pcm),
        "elapsed": round(elapsed, 3),
        "max_gap": round(max_gap, 3),
        "block_rms": [round(float(v), 1) for v in rms],
        "freq_first": round(dominant_frequency(pcm[:rate], rate), 1),
        "freq_last": round(dominant_frequency(pcm[-rate:], rate), 1),
    }


class Inbox:
    """Received events, consumed by expect_* steps."""

    def __init__(self) -> None:
        self.items: dict[str, list[dict[str, Any]]] = {}
        self.cond = asyncio.Condition()

    async def put(self, kind: str, item: dict[str, Any]) -> None:
        async with self.cond:
            self.items.setdefault(kind, []).append(item)
            self.cond.notify_all()

    async def take(
        self, kind: str, count: int, timeout: float, match: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        def matching() -> list[dict[str, Any]]:
            got = self.items.get(kind, [])
            if match:
                got = [g for g in got if all(g.get(k) == v for k, v in match.items())]
            return got

        async with self.cond:
            try:
                await asyncio.wait_for(
                    self.cond.wait_for(lambda: len(matching()) >= count), timeout
                )
            except asyncio.TimeoutError:
                pass
            got = matching()[:count]
            for g in got:
                self.items[kind].remove(g)
            return got


class Driver:
    def __init__(self) -> None:
        self.room = rtc.Room()
        self.inbox = Inbox()
        self.tasks: list[asyncio.Task[Any]] = []
        self.sources: list[rtc.AudioSource] = []
        self.signals: asyncio.Queue[str] = asyncio.Queue()
        self.monitor: dict[str, Any] | None = None
        self._wire()

    # ---- events -------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        self.tasks.append(asyncio.ensure_future(coro))

    def _wire(self) -> None:
        room = self.room

        @room.on("participant_connected")
        def _pc(p: rtc.RemoteParticipant) -> None:
            emit({"event": "participant_connected", "identity": p.identity})

        @room.on("participant_disconnected")
        def _pd(p: rtc.RemoteParticipant) -> None:
            emit({"event": "participant_disconnected", "identity": p.identity})

        @room.on("track_subscribed")
        def _ts(
            track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
        ) -> None:
            emit(
                {
                    "event": "track_subscribed",
                    "identity": p.identity,
                    "sid": pub.sid,
                    "kind": "audio" if track.kind == rtc.TrackKind.KIND_AUDIO else "video",
                    "name": pub.name,
                }
            )
            self._spawn(
                self.inbox.put(
                    "track", {"identity": p.identity, "track": track, "kind": int(track.kind),
                              "publication": pub}
                )
            )

        @room.on("data_received")
        def _dr(pkt: rtc.DataPacket) -> None:
            item = {
                "sender": pkt.participant.identity if pkt.participant else None,
                "topic": pkt.topic or "",
                **_describe(pkt.data),
            }
            emit({"event": "data", **item})
            self._spawn(self.inbox.put("data", item))

        @room.on("sip_dtmf_received")
        def _dtmf(d: rtc.SipDTMF) -> None:
            item = {
                "code": d.code,
                "digit": d.digit,
                "sender": d.participant.identity if d.participant else None,
            }
            emit({"event": "dtmf", **item})
            self._spawn(self.inbox.put("dtmf", item))

        @room.on("transcription_received")
        def _tr(segments: list[Any], participant: Any, publication: Any) -> None:
            segs = [
                {
                    "id": s.id,
                    "text": s.text,
                    "start_time": s.start_time,
                    "end_time": s.end_time,
                    "final": s.final,
                    "language": s.language,
                }
                for s in segments
            ]
            item = {"segments": segs, "sender": participant.identity if participant else None}
            emit({"event": "transcription", **item})
            self._spawn(self.inbox.put("transcription", item))

        @room.on("e2ee_state_changed")
        def _e2ee(participant: Any, state: Any) -> None:
            emit({"event": "e2ee_state", "identity": getattr(participant, "identity", None),
                  "state": int(state)})

        @room.on("disconnected")
        def _d(reason: Any) -> None:
            emit({"event": "disconnected", "reason": str(reason)})

    # ---- steps --------------------------------------------------------------------------
    async def op_connect(self, s: dict[str, Any]) -> dict[str, Any]:
        opts = rtc.RoomOptions(auto_subscribe=s.get("auto_subscribe", True))
        if "e2ee_key" in s:  # end-to-end encryption (issue 17); "" = per-participant keys
            key = str(s["e2ee_key"]).encode()
            kpo = rtc.KeyProviderOptions(shared_key=key or None)
            if s.get("e2ee_kdf") == "hkdf":
                kpo.key_derivation_function = rtc.KeyDerivationFunction.HKDF
            if "e2ee_failure_tolerance" in s:
                kpo.failure_tolerance = int(s["e2ee_failure_tolerance"])
            if "e2ee_ratchet_window" in s:
                kpo.ratchet_window_size = int(s["e2ee_ratchet_window"])
            opts.encryption = rtc.E2EEOptions(key_provider_options=kpo)
        if "single_peer_connection" in s:
            opts.single_peer_connection = bool(s["single_peer_connection"])
        t = time.monotonic()
        await asyncio.wait_for(self.room.connect(s["url"], s["token"], opts), s.get("timeout", 20))
        lp = self.room.local_participant
        return {
            "identity": lp.identity,
            "sid": lp.sid,
            "room": self.room.name,
            "connect_s": round(time.monotonic() - t, 3),
            "remote": sorted(self.room.remote_participants),
        }

    async def op_wait_participant(self, s: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + s.get("timeout", 15)
        while time.monotonic() < deadline:
            if s["identity"] in self.room.remote_participants:
                return {"identity": s["identity"]}
            await asyncio.sleep(0.05)
        raise TimeoutError(f"participant {s['identity']} did not join")

    async def op_wait_participant_gone(self, s: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + s.get("timeout", 30)
        while time.monotonic() < deadline:
            if s["identity"] not in self.room.remote_participants:
                return {"identity": s["identity"]}
            await asyncio.sleep(0.05)
        raise TimeoutError(f"participant {s['identity']} did not leave")

    async def op_send_data(self, s: dict[str, Any]) -> dict[str, Any]:
        data = _payload_bytes(s)
        for _ in range(int(s.get("count", 1))):
            await self.room.local_participant.publish_data(
                data,
                reliable=s.get("reliable", True),
                destination_identities=list(s.get("destinations", [])),
                topic=s.get("topic", ""),
            )
        return {"size": len(data)}

    async def _expect(
        self, kind: str, s: dict[str, Any], match_keys: tuple[str, ...]
    ) -> dict[str, Any]:
        count = int(s.get("count", 1))
        match = {k: s[k] for k in match_keys if k in s}
        got = await self.inbox.take(kind, count, s.get("timeout", 10), match)
        res: dict[str, Any] = {"items": got, "received": len(got)}
        if len(got) < count:
            res["ok"] = False
            res["error"] = f"expected {count} {kind}, got {len(got)}"
        return res

    async def op_expect_data(self, s: dict[str, Any]) -> dict[str, Any]:
        return await self._expect("data", s, ("topic", "sender"))

    async def op_publish_tone(self, s: dict[str, Any]) -> dict[str, Any]:
        rate, freq = int(s.get("sample_rate", 48000)), float(s["freq"])
        seconds, amp = float(s.get("seconds", 5)), float(s.get("amplitude", 0.3))
        source = rtc.AudioSource(rate, 1)
        self.sources.append(source)
        track = rtc.LocalAudioTrack.create_audio_track(s.get("name", "tone"), source)
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        pub = await asyncio.wait_for(
            self.room.local_participant.publish_track(track, opts), s.get("timeout", 15)
        )

        async def pump() -> None:
            spf = rate // 100
            n = 0
            total = int(seconds * 100)
            start = time.monotonic()
            for i in range(total):
                t = (np.arange(spf) + n) / rate
                n += spf
                pcm = (amp * 32767 * np.sin(2 * math.pi * freq * t)).astype(np.int16)
                frame = rtc.AudioFrame(pcm.tobytes(), rate, 1, spf)
                await source.capture_frame(frame)
                ahead = start + (i + 1) / 100 - time.monotonic()
                if ahead > 0.02:
                    await asyncio.sleep(ahead - 0.02)
            emit({"event": "tone_done", "freq": freq})

        task = asyncio.ensure_future(pump())
        self.tasks.append(task)
        if s.get("wait"):
            await task
        return {"sid": pub.sid, "freq": freq}

    async def op_subscribe_detect_tone(self, s: dict[str, Any]) -> dict[str, Any]:
        ident = s["identity"]
        got = await self.inbox.take(
            "track",
            1,
            s.get("timeout", 15),
            {"identity": ident, "kind": int(rtc.TrackKind.KIND_AUDIO)},
        )
        if not got:
            raise TimeoutError(f"no audio track from {ident}")
        if s.get("keep"):  # measure the same track again in a later step
            await self.inbox.put("track", got[0])
        track = got[0]["track"]
        rate = int(s.get("sample_rate", 48000))
        stream = rtc.AudioStream(track, sample_rate=rate, num_channels=1)
        skip, seconds = float(s.get("skip", 0.5)), float(s.get("seconds", 1.5))
        chunks: list[np.ndarray] = []
        collected = 0
        skipped = 0
        deadline = time.monotonic() + s.get("timeout", 15)

        async def read() -> None:
            nonlocal collected, skipped
            async for ev in stream:
                pcm = np.frombuffer(bytes(ev.frame.data), dtype=np.int16)
                if skipped < skip * rate:
                    skipped += len(pcm)
                    continue
                chunks.append(pcm)
                collected += len(pcm)
                if collected >= seconds * rate:
                    return

        try:
            await asyncio.wait_for(read(), max(0.1, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            pass
        finally:
            await stream.aclose()
        if not chunks:
            raise TimeoutError("no audio frames received")
        pcm = np.concatenate(chunks)
        rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
        return {
            "identity": ident,
            "freq": round(dominant_frequency(pcm, rate), 1),
            "rms": round(rms, 1),
            "samples": len(pcm),
        }

    async def op_publish_video(self, s: dict[str, Any]) -> dict[str, Any]:
        w, h = int(s.get("width", 320)), int(s.get("height", 240))
        fps, seconds = float(s.get("fps", 15)), float(s.get("seconds", 5))
        r, g, b = s.get("color", [200, 40, 40])
        source = rtc.VideoSource(w, h)
        track = rtc.LocalVideoTrack.create_video_track(s.get("name", "video"), source)
        opts = rtc.TrackPublishOptions(
            source=rtc.TrackSource.SOURCE_CAMERA, simulcast=bool(s.get("simulcast", False))
        )
        if s.get("max_bitrate"):
            opts.video_encoding.max_bitrate = int(s["max_bitrate"])
            opts.video_encoding.max_framerate = fps
        pub = await asyncio.wait_for(
            self.room.local_participant.publish_track(track, opts), s.get("timeout", 15)
        )
        rgba = np.empty((h, w, 4), dtype=np.uint8)
        rgba[:] = (r, g, b, 255)
        if s.get("pattern") == "moving":  # camera-like: texture, a moving block (30 frames)
            y, x = np.mgrid[0:h, 0:w]
            rgba[..., 0] = (128 + 100 * np.sin(x / 37.0)).astype(np.uint8)
            rgba[..., 1] = (128 + 100 * np.cos(y / 23.0)).astype(np.uint8)
            datas = []
            for i in range(30):
                img = rgba.copy()
                bx = (i * 12) % max(1, w - w // 5)
                img[h // 3 : h // 3 + h // 5, bx : bx + w // 5, :3] = (r, g, b)
                datas.append(img.tobytes())
        else:
            datas = [rgba.tobytes()]

        async def pump() -> None:
            start = time.monotonic()
            for i in range(int(seconds * fps)):
                frame = rtc.VideoFrame(w, h, rtc.VideoBufferType.RGBA, datas[i % len(datas)])
                source.capture_frame(frame)
                ahead = start + (i + 1) / fps - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            emit({"event": "video_done"})

        task = asyncio.ensure_future(pump())
        self.tasks.append(task)
        return {"sid": pub.sid, "width": w, "height": h}

    async def op_subscribe_video(self, s: dict[str, Any]) -> dict[str, Any]:
        ident = s["identity"]
        got = await self.inbox.take(
            "track",
            1,
            s.get("timeout", 15),
            {"identity": ident, "kind": int(rtc.TrackKind.KIND_VIDEO)},
        )
        if not got:
            raise TimeoutError(f"no video track from {ident}")
        stream = rtc.VideoStream(got[0]["track"])
        want = int(s.get("frames", 10))
        # qualities: [[second after the first frame, VideoQuality], ...] set in turn with
        # publication.set_video_quality (a simulcast publisher's layers)
        schedule = sorted(s.get("qualities", []))
        publication = got[0].get("publication")
        frames = 0
        last: Any = None
        # per_second: (frames, the most common size) per second after the first frame
        per_second: dict[int, dict[str, int]] = {}
        first: float | None = None

        async def read() -> None:
            nonlocal frames, last, first
            async for ev in stream:
                frames += 1
                last = ev.frame
                now = time.monotonic()
                first = now if first is None else first
                while schedule and now - first >= schedule[0][0] and publication is not None:
                    publication.set_video_quality(int(schedule.pop(0)[1]))
                sizes = per_second.setdefault(int(now - first), {})
                key = f"{ev.frame.width}x{ev.frame.height}"
                sizes[key] = sizes.get(key, 0) + 1
                if frames >= want:
                    return

        try:
            await asyncio.wait_for(read(), s.get("timeout", 15))
        except asyncio.TimeoutError:
            pass
        finally:
            await stream.aclose()
        if last is None:
            raise TimeoutError("no video frames received")
        rgba = last.convert(rtc.VideoBufferType.RGBA)
        arr = np.frombuffer(bytes(rgba.data), dtype=np.uint8).reshape(rgba.height, rgba.width, 4)
        hh, ww = arr.shape[0], arr.shape[1]
        center = arr[hh // 4 : 3 * hh // 4, ww // 4 : 3 * ww // 4, :3].reshape(-1, 3)
        return {
            "identity": ident,
            "frames": frames,
            "width": rgba.width,
            "height": rgba.height,
            "mean_rgb": [round(float(v), 1) for v in center.mean(axis=0)],
            "per_second": [
                [t, sum(c.values()), max(c, key=lambda k: c[k])]
                for t, c in sorted(per_second.items())
            ],
        }

    async def op_register_rpc(self, s: dict[str, Any]) -> dict[str, Any]:
        behaviour = s.get("behaviour", {"type": "echo"})
        method = s["method"]

        async def handler(data: rtc.RpcInvocationData) -> str:
            emit(
                {
                    "event": "rpc_invocation",
                    "method": method,
                    "caller": data.caller_identity,
                    "payload": data.payload,
                    "request_id": data.request_id,
                }
            )
            kind = behaviour.get("type", "echo")
            if kind == "sleep":
                await asyncio.sleep(float(behaviour.get("seconds", 1)))
            if kind == "error":
                raise rtc.RpcError(
                    int(behaviour.get("code", 1500)),
                    behaviour.get("message", "error"),
                    behaviour.get("data"),
                )
            if "response" in behaviour:
                return str(behaviour["response"])
            return data.payload

        self.room.local_participant.register_rpc_method(method, handler)
        return {"method": method}

    async def op_perform_rpc(self, s: dict[str, Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if "timeout" in s:
            kwargs["response_timeout"] = float(s["timeout"])
        payload = s.get("payload", "")
        if "repeat" in s:
            payload = payload * int(s["repeat"])
        t = time.monotonic()
        try:
            result = await self.room.local_participant.perform_rpc(
                destination_identity=s["dest"], method=s["method"], payload=payload, **kwargs
            )
            return {"result": result, "elapsed": round(time.monotonic() - t, 3)}
        except rtc.RpcError as e:
            return {
                "error": {"code": e.code, "message": e.message, "data": e.data},
                "elapsed": round(time.monotonic() - t, 3),
            }

    async def op_send_text(self, s: dict[str, Any]) -> dict[str, Any]:
        text = s.get("text", "")
        if "repeat" in s:
            text = text * int(s["repeat"])
        info = await self.room.local_participant.send_text(
            text,
            topic=s.get("topic", ""),
            destination_identities=list(s.get("destinations", [])) or None,
            attributes=s.get("attributes"),
        )
        return {"stream_id": info.stream_id, "size": len(text.encode())}

    async def op_send_bytes(self, s: dict[str, Any]) -> dict[str, Any]:
        data = _payload_bytes(s)
        writer = await self.room.local_participant.stream_bytes(
            name=s.get("name", "blob.bin"),
            topic=s.get("topic", ""),
            destination_identities=list(s.get("destinations", [])) or None,
            total_size=len(data),
        )
        await writer.write(data)
        await writer.aclose()
        return {"stream_id": writer.info.stream_id, "size": len(data)}

    def _register_stream_handlers(self, topic: str) -> None:
        def on_text(reader: rtc.TextStreamReader, sender: str) -> None:
            async def read() -> None:
                text = await reader.read_all()
                item = {
                    "topic": topic,
                    "sender": sender,
                    "text": text if len(text) <= 4096 else text[:64] + "...",
                    "size": len(text.encode()),
                    "stream_id": reader.info.stream_id,
                    "attributes": dict(reader.info.attributes or {}),
                }
                emit({"event": "text", **item})
                await self.inbox.put("text", item)

            self._spawn(read())

        def on_bytes(reader: rtc.ByteStreamReader, sender: str) -> None:
            async def read() -> None:
                chunks = [c async for c in reader]
                data = b"".join(chunks)
                item = {
                    "topic": topic,
                    "sender": sender,
                    "name": reader.info.name,
                    **_describe(data),
                }
                emit({"event": "bytes", **item})
                await self.inbox.put("bytes", item)

            self._spawn(read())

        try:
            self.room.register_text_stream_handler(topic, on_text)
        except ValueError:
            pass
        try:
            self.room.register_byte_stream_handler(topic, on_bytes)
        except ValueError:
            pass

    async def op_expect_text(self, s: dict[str, Any]) -> dict[str, Any]:
        return await self._expect("text", s, ("topic", "sender"))

    async def op_expect_bytes(self, s: dict[str, Any]) -> dict[str, Any]:
        return await self._expect("bytes", s, ("topic", "sender"))

    async def op_listen_streams(self, s: dict[str, Any]) -> dict[str, Any]:
        for topic in s.get("topics", []):
            self._register_stream_handlers(topic)
        return {"topics": s.get("topics", [])}

    async def op_publish_transcription(self, s: dict[str, Any]) -> dict[str, Any]:
        segs = [
            rtc.TranscriptionSegment(
                id=g["id"],
                text=g["text"],
                start_time=int(g.get("start_time", 0)),
                end_time=int(g.get("end_time", 0)),
                final=bool(g.get("final", True)),
                language=g.get("language", "en"),
            )
            for g in s["segments"]
        ]
        ident = s.get("participant_identity") or self.room.local_participant.identity
        await self.room.local_participant.publish_transcription(
            rtc.Transcription(
                participant_identity=ident, track_sid=s.get("track_sid", ""), segments=segs
            )
        )
        return {"segments": len(segs)}

    async def op_expect_transcription(self, s: dict[str, Any]) -> dict[str, Any]:
        return await self._expect("transcription", s, ("sender",))

    async def op_publish_dtmf(self, s: dict[str, Any]) -> dict[str, Any]:
        await self.room.local_participant.publish_dtmf(code=int(s["code"]), digit=s["digit"])
        return {}

    async def op_expect_dtmf(self, s: dict[str, Any]) -> dict[str, Any]:
        return await self._expect("dtmf", s, ("sender",))

    async def op_e2ee_set_key(self, s: dict[str, Any]) -> dict[str, Any]:
        """Set a key (the shared one, or ``identity``'s); ``use``: our tracks encrypt
        with its index from now on."""
        provider = self.room.e2ee_manager.key_provider
        key, index = str(s["key"]).encode(), int(s.get("index", 0))
        if s.get("identity"):
            provider.set_key(str(s["identity"]), key, index)
        else:
            provider.set_shared_key(key, index)
        if s.get("use"):
            for cryptor in self.room.e2ee_manager.frame_cryptors():
                if cryptor.participant_identity == self.room.local_participant.identity:
                    cryptor.set_key_index(index)
        return {"index": index}

    async def op_e2ee_ratchet(self, s: dict[str, Any]) -> dict[str, Any]:
        """Ratchet the shared key (or ``identity``'s) at ``index``."""
        provider = self.room.e2ee_manager.key_provider
        index = int(s.get("index", 0))
        if s.get("identity"):
            new = provider.ratchet_key(str(s["identity"]), index)
        else:
            new = provider.ratchet_shared_key(index)
        return {"index": index, "new_key_len": len(new)}

    async def op_monitor_tone(self, s: dict[str, Any]) -> dict[str, Any]:
        """Record ``identity``'s audio in the background until ``monitor_tone_stop``."""
        ident = s["identity"]
        got = await self.inbox.take(
            "track", 1, s.get("timeout", 15),
            {"identity": ident, "kind": int(rtc.TrackKind.KIND_AUDIO)},
        )
        if not got:
            raise TimeoutError(f"no audio track from {ident}")
        await self.inbox.put("track", got[0])  # a later step may use the track again
        stream = rtc.AudioStream(got[0]["track"], sample_rate=48000, num_channels=1)
        chunks: list[np.ndarray] = []
        self.monitor = {"chunks": chunks, "stream": stream, "start": time.monotonic(),
                        "max_gap": 0.0}
        monitor = self.monitor

        async def read() -> None:
            last: float | None = None  # the longest wait counts from the first frame on
            async for ev in stream:
                now = time.monotonic()
                if last is not None:
                    monitor["max_gap"] = max(monitor["max_gap"], now - last)
                last = now
                chunks.append(np.frombuffer(bytes(ev.frame.data), dtype=np.int16))

        monitor["task"] = asyncio.ensure_future(read())
        return {"identity": ident}

    async def op_monitor_tone_stop(self, s: dict[str, Any]) -> dict[str, Any]:
        """Stop the recording: the RMS of each 10 ms block, the dominant frequency of the
        first and the last second, the longest wait between two delivered frames."""
        monitor, self.monitor = self.monitor, None
        if monitor is None:
            raise RuntimeError("monitor_tone_stop without monitor_tone")
        monitor["task"].cancel()
        try:
            await asyncio.wait_for(monitor["stream"].aclose(), 5)
        except Exception as exc:  # noqa: BLE001 - closing a stream that already ended
            emit({"event": "monitor_close_error", "error": repr(exc)})
        pcm = np.concatenate(monitor["chunks"]) if monitor["chunks"] else np.zeros(0, np.int16)
        return _tone_report(pcm, 48000, time.monotonic() - monitor["start"], monitor["max_gap"])

    async def op_sleep(self, s: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(float(s.get("seconds", 1)))
        return {}

    async def op_wait_signal(self, s: dict[str, Any]) -> dict[str, Any]:
        name = s.get("name", "go")
        deadline = time.monotonic() + s.get("timeout", 30)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"signal {name!r} not received")
            line = await asyncio.wait_for(self.signals.get(), left)
            if line == name:
                return {"name": name}

    async def op_disconnect(self, s: dict[str, Any]) -> dict[str, Any]:
        await asyncio.wait_for(self.room.disconnect(), s.get("timeout", 10))
        return {}


def _stdin_reader(loop: asyncio.AbstractEventLoop, q: asyncio.Queue[str]) -> None:
    for line in sys.stdin:
        loop.call_soon_threadsafe(q.put_nowait, line.strip())


async def main(script: dict[str, Any], stdin_signals: bool) -> int:
    d = Driver()
    if stdin_signals:
        threading.Thread(
            target=_stdin_reader, args=(asyncio.get_running_loop(), d.signals), daemon=True
        ).start()
    for topic in script.get("stream_topics", []):
        d._register_stream_handlers(topic)
    failures = 0
    for i, step in enumerate(script.get("steps", [])):
        op = step.get("op", "")
        fn = getattr(d, f"op_{op}", None)
        if op == "connect":
            # stream handlers live on the room and may be set before connecting
            for topic in step.get("stream_topics", []):
                d._register_stream_handlers(topic)
        res: dict[str, Any] = {"op": op, "step": i}
        if step.get("label"):
            res["label"] = step["label"]
        if fn is None:
            res.update(ok=False, error=f"unknown op {op!r}")
        else:
            try:
                out = await fn(step)
                res["ok"] = True
                res.update(out)
            except Exception as e:  # noqa: BLE001 - report and go on/stop
                res.update(ok=False, error=f"{type(e).__name__}: {e}")
        emit(res)
        if not res.get("ok"):
            failures += 1
            if not step.get("optional") and script.get("stop_on_error", True):
                break
    for t in d.tasks:
        t.cancel()
    if d.room.isconnected():
        try:
            await asyncio.wait_for(d.room.disconnect(), 5)
        except Exception as exc:  # noqa: BLE001 - reported, the test's verdict is the failures
            emit({"event": "disconnect_error", "error": repr(exc)})
    emit({"event": "done", "failures": failures})
    return 0 if failures == 0 else 1


def entry() -> None:
    arg = sys.argv[1] if len(sys.argv) > 1 else "-"
    stdin_signals = arg != "-"
    script = json.loads(sys.stdin.readline() if arg == "-" else arg)
    if arg == "-":
        stdin_signals = True  # later lines on stdin are signals
    deadline = float(script.get("deadline", 60))

    def watchdog() -> None:
        time.sleep(deadline)
        emit({"event": "deadline", "seconds": deadline})
        os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        rc = asyncio.run(main(script, stdin_signals))
    except BaseException as e:  # noqa: BLE001
        emit({"event": "crash", "error": f"{type(e).__name__}: {e}"})
        rc = 2
    sys.stdout.flush()
    os._exit(rc)


if __name__ == "__main__":
    entry()
