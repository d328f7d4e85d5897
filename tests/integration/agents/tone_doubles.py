"""Test doubles of livekit-agents' VAD, STT, LLM and TTS that speak in tones (no network, no
model): a tone burst stands for speech.

* :class:`ToneVAD`: speech is audio whose RMS is over a threshold; end of speech after
  ``SILENCE_S`` of quiet.
* :class:`ToneSTT`: "transcribes" a segment as ``"tone <Hz>"`` (its dominant frequency by
  FFT, rounded to 10 Hz).
* :class:`ToneLLM`: answers ``"answer <2 x Hz>"`` to the last user message ``"tone <Hz>"``.
* :class:`ToneTTS`: "speaks" a text holding a number as ``ANSWER_S`` of a tone of that many Hz.

So a 440 Hz burst from the user comes back as 880 Hz from the agent: each stage's output is
checked by the next one's content. Run in the agent's process (livekit-agents' venv).
"""

from __future__ import annotations

import asyncio
import re
import uuid

import numpy as np
from livekit import rtc
from livekit.agents import APIConnectOptions, llm, stt, tts, vad
from livekit.agents.language import LanguageCode
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

SPEECH_RMS = 800.0       # int16 RMS over this is "speech"
MIN_SPEECH_S = 0.06      # this much speech starts a segment
SILENCE_S = 0.4          # this much quiet ends it
ANSWER_S = 1.5           # length of the answer tone
TTS_RATE = 24000
AMPLITUDE = 9000


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    """The frequency of the largest FFT bin of a mono int16 signal (Hann window)."""
    x = samples.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum) * rate / len(x))


def _mono(frame: rtc.AudioFrame) -> np.ndarray:
    data = np.frombuffer(bytes(frame.data), dtype=np.int16)
    return data.reshape(-1, frame.num_channels)[:, 0]


class ToneVAD(vad.VAD):
    def __init__(self) -> None:
        super().__init__(capabilities=vad.VADCapabilities(update_interval=0.032))

    @property
    def model(self) -> str:
        return "tone-vad"

    @property
    def provider(self) -> str:
        return "aiolivekit-tests"

    def stream(self) -> ToneVADStream:
        return ToneVADStream(self)


class ToneVADStream(vad.VADStream):
    async def _main_task(self) -> None:
        speech: list[rtc.AudioFrame] = []
        pending: list[rtc.AudioFrame] = []
        speaking = False
        speech_s = silence_s = 0.0
        samples = 0
        async for item in self._input_ch:
            if isinstance(item, vad.VADStream._FlushSentinel):
                speech, pending, speaking, speech_s, silence_s = [], [], False, 0.0, 0.0
                continue
            frame = item
            dur = frame.samples_per_channel / frame.sample_rate
            samples += frame.samples_per_channel
            mono = _mono(frame).astype(np.float64)
            loud = bool(len(mono)) and float(np.sqrt(np.mean(mono * mono))) > SPEECH_RMS
            if loud:
                silence_s = 0.0
                speech_s += dur
                (speech if speaking else pending).append(frame)
                if not speaking and speech_s >= MIN_SPEECH_S:
                    speaking, speech, pending = True, pending, []
                    self._event(vad.VADEventType.START_OF_SPEECH, samples, speech_s, 0.0,
                                list(speech), speaking=True)
            else:
                if speaking:
                    speech.append(frame)
                    silence_s += dur
                else:
                    pending, speech_s = [], 0.0
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


class ToneSTT(stt.STT):
    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))

    @property
    def model(self) -> str:
        return "tone-stt"

    @property
    def provider(self) -> str:
        return "aiolivekit-tests"

    async def _recognize_impl(self, buffer: stt.stt.AudioBuffer, *,
                              language: NotGivenOr[str] = NOT_GIVEN,
                              conn_options: APIConnectOptions) -> stt.SpeechEvent:
        frame = rtc.combine_audio_frames(buffer) if isinstance(buffer, list) else buffer
        mono = _mono(frame)
        loud = np.flatnonzero(np.abs(mono) > SPEECH_RMS)  # the burst, not the quiet around it
        burst = mono[loud[0]:loud[-1] + 1] if len(loud) else mono[:0]
        hz = dominant_hz(burst, frame.sample_rate) if len(burst) > 256 else 0.0
        text = f"tone {round(hz / 10) * 10}"
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT, request_id=uuid.uuid4().hex,
            alternatives=[stt.SpeechData(language=LanguageCode("en"), text=text,
                                         confidence=1.0)],
        )


class ToneLLM(llm.LLM):
    @property
    def model(self) -> str:
        return "tone-llm"

    @property
    def provider(self) -> str:
        return "aiolivekit-tests"

    def chat(self, *, chat_ctx: llm.ChatContext, tools: list[llm.Tool] | None = None,
             conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
             **_: object) -> ToneLLMStream:
        return ToneLLMStream(self, chat_ctx=chat_ctx, tools=tools or [],
                             conn_options=conn_options)


class ToneLLMStream(llm.LLMStream):
    async def _run(self) -> None:
        said = [m.text_content or "" for m in self._chat_ctx.items
                if getattr(m, "type", "") == "message" and m.role == "user"]
        match = re.search(r"(\d+)", said[-1] if said else "")
        text = f"answer {2 * int(match.group(1))}" if match else "answer 0"
        self._event_ch.send_nowait(llm.ChatChunk(
            id=uuid.uuid4().hex, delta=llm.ChoiceDelta(role="assistant", content=text)))


class ToneTTS(tts.TTS):
    def __init__(self) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False),
                         sample_rate=TTS_RATE, num_channels=1)

    @property
    def model(self) -> str:
        return "tone-tts"

    @property
    def provider(self) -> str:
        return "aiolivekit-tests"

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
            tone = (AMPLITUDE * np.sin(2 * np.pi * hz * t)).astype(np.int16)
            output_emitter.push(tone.tobytes())
        output_emitter.flush()
