"""The livekit-agents 1.8.9 program of ``bench/bench_agents.py`` (run in livekit-agents' venv).

    python agent_tone_app.py start        # LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET

The same code runs on the official SDK (switch off) and on aiolivekit
(``AIOLIVEKIT_AS_LIVEKIT_RTC=1``). The worker takes every room (automatic dispatch); each
job runs an ``AgentSession`` on model-free doubles, so the pipeline is livekit-agents' own
(RoomIO audio input, VAD, endpointing, STT, LLM, TTS, RoomIO audio output through an
``rtc.AudioSource``):

* VAD: int16 RMS over ``SPEECH_RMS`` is speech; ``SILENCE_S`` of quiet ends it;
* STT: ``"tone <Hz>"``, the dominant frequency (FFT) of the segment's loud samples, to
  ``STEP_HZ``; LLM: ``"answer <Hz + ANSWER_SHIFT_HZ>"``; TTS: ``ANSWER_S`` of a tone of the
  number it reads. The users speak one of several frequencies per burst, so an answer
  names the burst it answers.

The worker takes every job: load 0 (``load_fnc``) and an infinite ``load_threshold`` (with
a finite one livekit-agents reports itself full while a job it accepted is starting:
``_get_effective_load`` counts the reserved slot as ``load_threshold / num_idle_processes``),
and keeps one idle job process warm (``num_idle_processes=1``). Each job sets the participant
attribute ``bench.rtc`` to the module behind ``livekit.rtc`` and whether ``liblivekit_ffi``
is mapped, so the bench can check which SDK did the work.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
import uuid
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import (
    Agent,
    AgentServer,
    AgentSession,
    APIConnectOptions,
    JobContext,
    TurnHandlingOptions,
    cli,
    llm,
    stt,
    tts,
    vad,
)
from livekit.agents.language import LanguageCode
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

SPEECH_RMS = 800.0     # int16 RMS over this is "speech"
MIN_SPEECH_S = 0.05    # this much speech starts a segment
SILENCE_S = 0.2        # this much quiet ends it
STEP_HZ = 100          # the STT rounds to this
ANSWER_SHIFT_HZ = 1000  # the answer tone is the user's frequency + this
ANSWER_S = 0.4         # its length
TTS_RATE = 24000
AMPLITUDE = 9000

server = AgentServer(
    port=0,
    num_idle_processes=1,
    initialize_process_timeout=180.0,
    shutdown_process_timeout=10.0,
    load_threshold=math.inf,
    load_fnc=lambda: 0.0,
)


class EnergyVAD(vad.VAD):
    def __init__(self) -> None:
        super().__init__(capabilities=vad.VADCapabilities(update_interval=0.032))

    @property
    def model(self) -> str:
        return "energy-vad"

    @property
    def provider(self) -> str:
        return "aiolivekit-bench"

    def stream(self) -> EnergyVADStream:
        return EnergyVADStream(self)


class EnergyVADStream(vad.VADStream):
    async def _main_task(self) -> None:
        speech: list[rtc.AudioFrame] = []
        speaking = False
        speech_s = silence_s = 0.0
        samples = 0
        async for item in self._input_ch:
            if isinstance(item, vad.VADStream._FlushSentinel):
                speech, speaking, speech_s, silence_s = [], False, 0.0, 0.0
                continue
            frame = item
            dur = frame.samples_per_channel / frame.sample_rate
            samples += frame.samples_per_channel
            data = np.frombuffer(bytes(frame.data), dtype=np.int16)
            mono = data.reshape(-1, frame.num_channels)[:, 0].astype(np.float64)
            loud = bool(len(mono)) and float(np.sqrt(np.mean(mono * mono))) > SPEECH_RMS
            if loud:
                silence_s = 0.0
                speech_s += dur
                speech.append(frame)
                if not speaking and speech_s >= MIN_SPEECH_S:
                    speaking = True
                    self._event(vad.VADEventType.START_OF_SPEECH, samples, speech_s, 0.0,
                                list(speech), speaking=True)
            elif speaking:
                speech.append(frame)
                silence_s += dur
            else:
                speech, speech_s = [], 0.0
            self._event(vad.VADEventType.INFERENCE_DONE, samples, speech_s, silence_s, [frame],
                        speaking=speaking, probability=1.0 if loud else 0.0)
            if speaking and silence_s >= SILENCE_S:
                self._event(vad.VADEventType.END_OF_SPEECH, samples, speech_s, silence_s,
                            list(speech), speaking=False)
                speech, speaking, speech_s, silence_s = [], False, 0.0, 0.0

    def _event(self, kind: vad.VADEventType, samples: int, speech_s: float, silence_s: float,
               frames: list[rtc.AudioFrame], *, speaking: bool, probability: float = 0.0) -> None:
        self._event_ch.send_nowait(vad.VADEvent(
            type=kind, samples_index=samples, timestamp=asyncio.get_running_loop().time(),
            speech_duration=speech_s, silence_duration=silence_s, frames=frames,
            probability=probability, speaking=speaking,
            raw_accumulated_speech=speech_s, raw_accumulated_silence=silence_s,
        ))


class FixedSTT(stt.STT):
    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))

    @property
    def model(self) -> str:
        return "fixed-stt"

    @property
    def provider(self) -> str:
        return "aiolivekit-bench"

    async def _recognize_impl(self, buffer: stt.stt.AudioBuffer, *,
                              language: NotGivenOr[str] = NOT_GIVEN,
                              conn_options: APIConnectOptions) -> stt.SpeechEvent:
        frame = rtc.combine_audio_frames(buffer) if isinstance(buffer, list) else buffer
        data = np.frombuffer(bytes(frame.data), dtype=np.int16)
        mono = data.reshape(-1, frame.num_channels)[:, 0].astype(np.float64)
        loud = np.flatnonzero(np.abs(mono) > SPEECH_RMS)
        burst = mono[loud[0]:loud[-1] + 1] if len(loud) else mono[:0]
        hz = 0
        if len(burst) > 256:
            spectrum = np.abs(np.fft.rfft(burst * np.hanning(len(burst))))
            spectrum[0] = 0.0
            hz = round(float(np.argmax(spectrum)) * frame.sample_rate / len(burst) / STEP_HZ)
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT, request_id=uuid.uuid4().hex,
            alternatives=[stt.SpeechData(language=LanguageCode("en"),
                                         text=f"tone {hz * STEP_HZ}",
                                         confidence=1.0)],
        )


class FixedLLM(llm.LLM):
    @property
    def model(self) -> str:
        return "fixed-llm"

    @property
    def provider(self) -> str:
        return "aiolivekit-bench"

    def chat(self, *, chat_ctx: llm.ChatContext, tools: list[llm.Tool] | None = None,
             conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
             **_: object) -> FixedLLMStream:
        return FixedLLMStream(self, chat_ctx=chat_ctx, tools=tools or [],
                              conn_options=conn_options)


class FixedLLMStream(llm.LLMStream):
    async def _run(self) -> None:
        said = [m.text_content or "" for m in self._chat_ctx.items
                if getattr(m, "type", "") == "message" and m.role == "user"]
        match = re.search(r"(\d+)", said[-1] if said else "")
        hz = int(match.group(1)) + ANSWER_SHIFT_HZ if match and int(match.group(1)) else 0
        self._event_ch.send_nowait(llm.ChatChunk(
            id=uuid.uuid4().hex, delta=llm.ChoiceDelta(role="assistant", content=f"answer {hz}")))


class ToneTTS(tts.TTS):
    def __init__(self) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False),
                         sample_rate=TTS_RATE, num_channels=1)

    @property
    def model(self) -> str:
        return "tone-tts"

    @property
    def provider(self) -> str:
        return "aiolivekit-bench"

    def synthesize(self, text: str, *,
                   conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
                   ) -> ToneChunkedStream:
        return ToneChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class ToneChunkedStream(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        match = re.search(r"(\d+)", self.input_text)
        hz = int(match.group(1)) if match else 0
        output_emitter.initialize(request_id=uuid.uuid4().hex, sample_rate=TTS_RATE,
                                  num_channels=1, mime_type="audio/pcm")
        if hz:
            t = np.arange(int(ANSWER_S * TTS_RATE)) / TTS_RATE
            output_emitter.push((AMPLITUDE * np.sin(2 * np.pi * hz * t)).astype(np.int16)
                                .tobytes())
        output_emitter.flush()


def native_mapped() -> bool:
    with open("/proc/self/maps") as f:
        return any("liblivekit_ffi" in line for line in f)


def _trace_sources() -> None:
    """BENCH_AGENT_EVENTS with aiolivekit: log every 20 ms chunk our AudioSources hand to
    their tracks (time, pts, RMS), to line up with what the user hears."""
    if not hasattr(rtc.AudioSource, "_add_sink"):
        return  # the official SDK: nothing to hook
    log = logging.getLogger("bench.source")
    init = rtc.AudioSource.__init__

    def traced(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)

        def sink(data: bytes, pts: int) -> None:
            x = np.frombuffer(data, np.int16).astype(np.float64)
            log.info("@chunk %.4f %d %.0f", time.monotonic(), pts,
                     float(np.sqrt(np.mean(x * x))) if len(x) else 0.0)
        self._add_sink(sink)
    rtc.AudioSource.__init__ = traced  # type: ignore[method-assign]


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    session: AgentSession = AgentSession(
        vad=EnergyVAD(), stt=FixedSTT(), llm=FixedLLM(), tts=ToneTTS(),
        turn_handling=TurnHandlingOptions(
            turn_detection="vad",
            endpointing={"mode": "fixed", "min_delay": 0.0, "max_delay": 1.0},
            interruption={"enabled": False},
            preemptive_generation={"enabled": False},
        ),
        user_away_timeout=None,
    )
    if os.environ.get("BENCH_AGENT_EVENTS"):  # analysis: the session's events, timed
        _trace_sources()
        if os.environ.get("BENCH_AGENT_SLOW"):  # asyncio's slow-callback report (debug mode)
            loop = asyncio.get_running_loop()
            loop.set_debug(True)
            loop.slow_callback_duration = float(os.environ["BENCH_AGENT_SLOW"])
        log = logging.getLogger("bench.agent")

        def on_event(name: str) -> Any:
            def handler(ev: Any) -> None:
                log.info("@event %s %.3f %s", name, time.monotonic(), ev)
            return handler
        for name in ("agent_state_changed", "user_state_changed", "speech_created",
                     "user_input_transcribed", "agent_false_interruption", "error"):
            session.on(name, on_event(name))
    await session.start(agent=Agent(instructions="answer each tone"), room=ctx.room)
    await ctx.room.local_participant.set_attributes(
        {"bench.rtc": f"{rtc.__name__} native={int(native_mapped())}"})


if __name__ == "__main__":
    cli.run_app(server)
