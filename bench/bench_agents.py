"""livekit-agents on aiolivekit vs on the official SDK: worker CPU, memory and answer latency.

    scripts/netns-run python bench/bench_agents.py [--jobs 1,10] [--bursts 10]
        [--servers livekit-server,embedded] [--sdks official,aiolivekit]

One livekit-agents 1.8.9 program, ``bench/agent_tone_app.py`` (an ``AgentSession`` on
model-free doubles: an energy VAD, an FFT "STT" writing ``tone <Hz>``, an "LLM" answering
``answer <Hz + 1000>``, a TTS playing that tone through livekit-agents' own RoomIO audio
output), runs as one worker process (``python agent_tone_app.py start`` in
``~/.cache/aiolivekit/agents-venv``) twice per job count and server, in the same run: once
on the official ``livekit`` 1.1.21 wheel (switch off) and once on aiolivekit
(``AIOLIVEKIT_AS_LIVEKIT_RTC=1``). The order alternates per job count. Each job reports the
module behind ``livekit.rtc`` and whether liblivekit_ffi is mapped (participant attribute
``bench.rtc``); the bench checks it.

Users: one separate process on aiolivekit (the same for both worker variants) joins N rooms
(one user each, so the server dispatches N jobs), publishes a microphone track paced in
real time (20 ms frames) carrying tone bursts (``TONE_S`` on, ``GAP_S`` off, K bursts; burst
k is ``SPEAK_HZ[k % 4]``, so an answer names the burst it answers; the users staggered over
the period), and receives the agent's audio. Answer latency = the ``capture_frame`` call of
the first silent frame after a burst -> the arrival at the user's application of the
aiolivekit ``AudioStream`` frame (20 ms frames out of its playout buffer) holding the
answer's onset: a 10 ms chunk with RMS > 1500 after >= 100 ms of quiet, whose 40 ms FFT is
within 80 Hz of an expected answer; it is matched to the oldest unanswered burst of that
frequency. It includes the VAD's 0.2 s of silence before end of speech (the same on both
sides). No answer within ``MAX_LATENCY_S`` is a miss. Also counted: gaps (10-90 ms of
quiet between loud chunks of the answers heard) and onsets that answer no burst.

Worker measurements (``/proc``, the worker and all its descendants: livekit-agents runs each
job in its own process forked from a forkserver, plus one idle warm process and the
resource tracker): CPU user+sys from the start of the bursts to ``MAX_LATENCY_S`` after the
last one (after all agents listen and the process tree has been unchanged for 3 s), as % of
one core, total and per job; RSS summed over the tree (peak over the whole run, median over
that window) and PSS summed over the tree (shared pages divided among their sharers: the
forkserver's children share its pages copy-on-write, which summed RSS counts once per
process). Per job = total / N; "added per job" = (steady - tree before any job) / N.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

THIS = Path(__file__).resolve()
HERE = THIS.parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import BenchContext, ServerInfo, row  # noqa: E402

CACHE = Path(os.environ.get("AIOLIVEKIT_CACHE") or Path.home() / ".cache" / "aiolivekit")
AGENTS_PYTHON = Path(os.environ.get("AIOLIVEKIT_AGENTS_VENV") or CACHE / "agents-venv") / "bin" / "python"
CLK_TCK = os.sysconf("SC_CLK_TCK")
RATE = 48000
FRAME = 960            # 20 ms mic frames
SPEAK_HZ = (400, 600, 800, 1000)  # burst k of a user is SPEAK_HZ[k % 4]
ANSWER_SHIFT_HZ = 1000  # bench/agent_tone_app.py answers a burst of f Hz with f + this
MATCH_HZ = 80          # an answer chunk's dominant frequency is this close to one expected
MAX_LATENCY_S = 10.0   # an answer later than this after its burst is a miss
ONSET_QUIET = 10       # an answer starts after this many quiet 10 ms chunks
TONE_S = 0.5
GAP_S = 1.5
AMPLITUDE = 9000
LOUD_RMS = 1500.0
SETTLE_S = 3.0
TARGET_RATIO = {"cpu": 0.7, "mem": 0.7, "latency": 1.0}


# ----------------------------------------------------------------------------- /proc


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo and len(out) < 1000:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def proc_sample(pid: int) -> tuple[float, int, int] | None:
    """(CPU seconds user+sys, RSS kB, PSS kB) of one process, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        rss = pss = 0
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
        return cpu, rss, pss
    except (OSError, IndexError, ValueError):
        return None


def describe(root: int, pid: int, cpu_s: float, window: float) -> str:
    """``kind pid: CPU %, RSS/PSS MiB`` of one process of the tree (for the log)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        cmd, ppid = "?", 0
    kind = ("worker" if pid == root else "job/idle" if ppid != root
            else "forkserver" if "forkserver" in cmd
            else "resource_tracker" if "resource_tracker" in cmd else "other")
    got = proc_sample(pid)
    rss, pss = (got[1] / 1024, got[2] / 1024) if got else (0.0, 0.0)
    return f"{kind} {pid}: CPU {100 * cpu_s / window:.1f}%, RSS {rss:.0f} PSS {pss:.0f} MiB"


class TreeSampler:
    """Samples the worker's process tree every ``interval`` s (bounded by the caller).

    A plain class: bench/run.py loads this file without registering it in sys.modules,
    which ``dataclasses`` needs."""

    def __init__(self, root: int, interval: float = 0.5) -> None:
        self.root, self.interval = root, interval
        self.cpu: dict[int, float] = {}  # last CPU seconds per pid
        self.samples: list[tuple[float, int, int, int]] = []  # t, rss kB, pss kB, processes
        self.pids: list[int] = []
        self.pids_changed = 0.0

    def sample(self) -> None:
        pids = tree_pids(self.root)
        rss = pss = 0
        for pid in pids:
            got = proc_sample(pid)
            if got is not None:
                self.cpu[pid], r, p = got
                rss, pss = rss + r, pss + p
        now = time.monotonic()
        if sorted(pids) != sorted(self.pids):
            self.pids, self.pids_changed = pids, now
        self.samples.append((now, rss, pss, len(pids)))

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)


# ----------------------------------------------------------------------------- the worker


class Worker:
    """``python agent_tone_app.py start`` in the agents venv, in its own process group."""

    def __init__(self, info: ServerInfo, sdk: str) -> None:
        self.info, self.sdk = info, sdk
        self.log_path = Path(tempfile.mkstemp(prefix=f"bench-agent-{sdk}-", suffix=".log")[1])
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LIVEKIT_", "PYTHON", "VIRTUAL_ENV", "AIOLIVEKIT_AS_"))}
        env.update({"LIVEKIT_URL": self.info.url, "LIVEKIT_API_KEY": self.info.api_key,
                    "LIVEKIT_API_SECRET": self.info.api_secret,
                    "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE": "0", "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": str(HERE)})
        if self.sdk == "aiolivekit":
            env["AIOLIVEKIT_AS_LIVEKIT_RTC"] = "1"
            env["PYTHONPATH"] = f"{ROOT / 'src'}:{HERE}"
        with self.log_path.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                str(AGENTS_PYTHON), str(HERE / "agent_tone_app.py"), "start",
                "--log-level", "info", env=env, cwd=str(HERE),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_registered(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while "registered worker" not in self.log():
            assert self.proc is not None
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.sdk} worker did not register (exit "
                                   f"{self.proc.returncode}):\n{self.log()[-3000:]}")
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), 10)


async def read_marker(stream: asyncio.StreamReader, marker: str, timeout: float) -> str:
    """The rest of the first stdout line starting with ``marker`` (bounded)."""
    deadline = time.monotonic() + timeout
    for _ in range(100000):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        line = (await asyncio.wait_for(stream.readline(), left)).decode(errors="replace")
        if not line:
            raise RuntimeError(f"users process ended before {marker}")
        if line.startswith("@error"):
            raise RuntimeError(f"users process: {line.strip()}")
        if line.startswith(marker):
            return line[len(marker):].strip()
    raise TimeoutError(f"no {marker} in {timeout} s")


async def measure(info: ServerInfo, sdk: str, jobs: int, bursts: int,
                  log: Any = print) -> dict[str, Any]:
    """One worker on ``sdk`` serving ``jobs`` rooms; see the module docstring."""
    worker = Worker(info, sdk)
    users: asyncio.subprocess.Process | None = None
    sampler_task: asyncio.Task[None] | None = None
    try:
        await worker.start()
        await worker.wait_registered(180)
        assert worker.proc is not None
        sampler = TreeSampler(worker.proc.pid)
        sampler_task = asyncio.ensure_future(sampler.run())
        # the worker, its forkserver and one warm idle job process, settled
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (  # noqa: ASYNC110  (polls /proc)
                len(sampler.pids) >= 3 and time.monotonic() - sampler.pids_changed > SETTLE_S):
            await asyncio.sleep(0.25)
        baseline = sampler.samples[-1]
        tag = f"{sdk[:3]}{jobs}-{int(time.time() * 1000) % 10**7}"
        cfg = {"url": info.url, "bursts": bursts,
               "tokens": [info.token(f"user-{i}", f"agents-{tag}-{i}") for i in range(jobs)]}
        env = {**{k: v for k, v in os.environ.items()
                  if not k.startswith(("PYTHON", "AIOLIVEKIT_AS_"))},
               "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
        users = await asyncio.create_subprocess_exec(
            sys.executable, str(THIS), "--users", json.dumps(cfg),
            env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert users.stdout is not None and users.stdin is not None
        ready = json.loads(await read_marker(users.stdout, "@ready", 300))
        deadline = time.monotonic() + 60
        # the tree settled (the next idle process started) before the burst phase
        while (time.monotonic() < deadline  # noqa: ASYNC110  (polls /proc)
               and time.monotonic() - sampler.pids_changed < SETTLE_S):
            await asyncio.sleep(0.25)
        sampler.sample()
        t0, cpu0, n0 = time.monotonic(), dict(sampler.cpu), len(sampler.samples)
        users0, harness0 = proc_sample(users.pid), os.times()
        users.stdin.write(b"go\n")
        await users.stdin.drain()
        await read_marker(users.stdout, "@done", bursts * (TONE_S + GAP_S) + 90)
        sampler.sample()
        t1, cpu1 = time.monotonic(), dict(sampler.cpu)
        users1, harness1 = proc_sample(users.pid), os.times()
        steady = sampler.samples[n0:]
        detail = [describe(sampler.root, pid, cpu1.get(pid, 0.0) - cpu0.get(pid, 0.0), t1 - t0)
                  for pid in sampler.pids]
        result = json.loads(await read_marker(users.stdout, "@result", 60))
    finally:
        if sampler_task is not None:
            sampler_task.cancel()
            await asyncio.gather(sampler_task, return_exceptions=True)
        if users is not None and users.returncode is None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(users.wait(), 30)
            if users.returncode is None:
                users.kill()
                await users.wait()
        await worker.stop()
    want = "aiolivekit.rtc native=0" if sdk == "aiolivekit" else "livekit.rtc native=1"
    if set(ready["rtc"]) != {want}:
        raise RuntimeError(f"{sdk} worker's jobs report {ready['rtc']}, expected {want!r}")
    cpu_s = sum(v - cpu0.get(pid, 0.0) for pid, v in cpu1.items())
    lat = sorted(x * 1000 for x in result["latencies"])
    mib = 1 / 1024
    return {
        "sdk": sdk, "jobs": jobs, "window_s": t1 - t0,
        "cpu_pct_total": 100 * cpu_s / (t1 - t0),
        "cpu_pct_per_job": 100 * cpu_s / (t1 - t0) / jobs,
        "rss_peak_mib": max(s[1] for s in sampler.samples) * mib,
        "rss_steady_mib": statistics.median(s[1] for s in steady) * mib,
        "pss_steady_mib": statistics.median(s[2] for s in steady) * mib,
        "rss_idle_mib": baseline[1] * mib, "pss_idle_mib": baseline[2] * mib,
        "procs": max(s[3] for s in steady),
        "latency_median_ms": statistics.median(lat) if lat else float("nan"),
        "latency_p90_ms": lat[min(len(lat) - 1, int(0.9 * len(lat)))] if lat else float("nan"),
        "answers": len(lat), "bursts": jobs * bursts, "rtc": ready["rtc"][0],
        "heard_hz": result["heard_hz"], "answer_gaps": result["gaps"],
        "onsets_unmatched": result["onsets"] - len(lat),
        "processes": detail,
        # the other processes of the run: the users process, and this harness (which hosts
        # the embedded server when that is the server), % of one core
        "users_cpu_pct": 100 * (users1[0] - users0[0]) / (t1 - t0) if users0 and users1 else -1,
        "harness_cpu_pct": 100 * (harness1.user + harness1.system - harness0.user
                                  - harness0.system) / (t1 - t0),
    }


# ----------------------------------------------------------------------------- the users


async def users_main(cfg: dict[str, Any]) -> None:
    """The users process (aiolivekit): see the module docstring. Talks to the harness
    through stdout lines ``@ready``, ``@done``, ``@result`` and ``go`` on stdin."""
    import numpy as np

    from aiolivekit import rtc

    loop = asyncio.get_running_loop()
    n, bursts = len(cfg["tokens"]), int(cfg["bursts"])
    period = TONE_S + GAP_S
    rooms = [rtc.Room() for _ in range(n)]
    sources: list[Any] = []
    onsets: list[list[tuple[float, int]]] = [[] for _ in range(n)]  # (time, burst kind)
    ends: list[list[tuple[float, int]]] = [[] for _ in range(n)]
    tasks: list[asyncio.Task[Any]] = []
    heard_hz: list[int] = []  # dominant frequency of every onset heard (for the log)
    gaps = [0]  # quiet runs shorter than ONSET_QUIET inside the answers heard
    # BENCH_AGENTS_DUMP=<dir>: every user's received PCM and the burst ends, for analysis
    dump_dir = os.environ.get("BENCH_AGENTS_DUMP")
    dump: list[list[tuple[float, bytes]]] | None = [[] for _ in range(n)] if dump_dir else None
    stat_rows: list[list[list[float]]] = [[] for _ in range(n)]
    STAT_KEYS = ("target_delay", "current_delay", "concealed_samples", "silent_samples",
                 "inserted_samples_for_deceleration", "removed_samples_for_acceleration",
                 "packets_received", "packets_discarded", "packets_lost", "slot_resyncs",
                 "stream_restarts", "buffer_flushes")

    def playout_stats(track: Any) -> Any:
        from aiolivekit._compat import aiortc as aiortc_compat

        shell = aiortc_compat.jitter_buffer(getattr(track, "_receiver", None))
        return shell.buffer.stats if shell is not None else None

    async def listen(i: int, track: Any) -> None:
        # onset: a loud 10 ms chunk after >= ONSET_QUIET quiet ones; its frequency from the
        # FFT of 40 ms from the onset on; a shorter quiet run between loud chunks is a gap
        quiet_run = ONSET_QUIET
        pending: tuple[float, list[Any]] | None = None
        async for ev in rtc.AudioStream(track, sample_rate=RATE, num_channels=1):
            t = time.monotonic()
            if dump is not None:
                dump[i].append((t, bytes(ev.frame.data)))
                st = playout_stats(track)
                if st is not None:
                    stat_rows[i].append([t, *(float(getattr(st, k)) for k in STAT_KEYS)])
            data = np.frombuffer(bytes(ev.frame.data), np.int16).astype(np.float64)
            for k in range(0, len(data) - 479, 480):
                chunk = data[k:k + 480]
                loud = float(np.sqrt(np.mean(chunk * chunk))) > LOUD_RMS
                if pending is not None:
                    pending[1].append(chunk)
                    if len(pending[1]) == 4:
                        x = np.concatenate(pending[1])
                        spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
                        spec[0] = 0.0
                        hz = float(np.argmax(spec)) * RATE / len(x)
                        heard_hz.append(round(hz))
                        for kind, f in enumerate(SPEAK_HZ):
                            if abs(hz - f - ANSWER_SHIFT_HZ) <= MATCH_HZ:
                                onsets[i].append((pending[0], kind))
                        pending = None
                if loud:
                    if quiet_run >= ONSET_QUIET and pending is None:
                        pending = (t, [chunk])
                    elif 0 < quiet_run < ONSET_QUIET:
                        gaps[0] += 1
                    quiet_run = 0
                else:
                    quiet_run += 1

    def on_sub(i: int) -> Any:
        def handler(track: Any, *_: Any) -> None:
            if track.kind == rtc.TrackKind.KIND_AUDIO:
                tasks.append(asyncio.ensure_future(listen(i, track)))
        return handler

    def agent_of(room: Any) -> Any:
        return next((p for p in room.remote_participants.values()
                     if p.attributes.get("lk.agent.state") == "listening"
                     and p.attributes.get("bench.rtc")
                     and any(pub.subscribed for pub in p.track_publications.values())), None)

    go_at: float | None = None
    mic_end = loop.time() + 900

    async def microphones() -> None:
        t = np.arange(FRAME) / RATE
        silence = np.zeros(FRAME, np.int16).tobytes()
        start = loop.time()
        loud_now = [-1] * n  # the kind of burst being spoken, -1: quiet
        for tick in range(int(900 / 0.02)):
            due = start + tick * 0.02
            if due > mic_end:
                return
            await asyncio.sleep(max(0.0, due - loop.time()))
            for i, source in enumerate(sources):
                kind = -1
                if go_at is not None:
                    rel = due - go_at - i * period / n
                    if 0 <= rel < bursts * period and rel % period < TONE_S:
                        kind = int(rel // period) % len(SPEAK_HZ)
                if kind >= 0:
                    tone = AMPLITUDE * np.sin(2 * np.pi * SPEAK_HZ[kind] * (t + tick * 0.02))
                    data = tone.astype(np.int16).tobytes()
                else:
                    data = silence
                    if loud_now[i] >= 0:
                        ends[i].append((time.monotonic(), loud_now[i]))
                loud_now[i] = kind
                await source.capture_frame(rtc.AudioFrame(data, RATE, 1, FRAME))

    try:
        for i, room in enumerate(rooms):
            room.on("track_subscribed", on_sub(i))
        await asyncio.wait_for(asyncio.gather(
            *(room.connect(cfg["url"], tok) for room, tok in zip(rooms, cfg["tokens"], strict=True))), 60)
        for room in rooms:
            source = rtc.AudioSource(RATE, 1)
            track = rtc.LocalAudioTrack.create_audio_track("mic", source)
            await asyncio.wait_for(room.local_participant.publish_track(
                track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)), 30)
            sources.append(source)
        tasks.append(asyncio.ensure_future(microphones()))
        deadline = time.monotonic() + 280
        while not all(agent_of(room) for room in rooms):
            if time.monotonic() > deadline:
                ok = sum(1 for room in rooms if agent_of(room))
                raise TimeoutError(f"only {ok} of {n} agents listening after 280 s")
            await asyncio.sleep(0.1)
        rtcs = [agent_of(room).attributes["bench.rtc"] for room in rooms]
        print("@ready", json.dumps({"rtc": sorted(set(rtcs))}), flush=True)
        line = await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), 120)
        if line.strip() != "go":
            raise RuntimeError(f"expected go, got {line!r}")
        go_at = loop.time() + 0.5
        mic_end = go_at + bursts * period + MAX_LATENCY_S
        await asyncio.sleep(mic_end - loop.time())
        print("@done", flush=True)
        latencies: list[float] = []
        for i in range(n):  # each answer onset: the oldest unanswered burst of its kind
            open_ends = list(ends[i])
            for o, kind in onsets[i]:
                match = next((e for e in open_ends if e[1] == kind and e[0] <= o), None)
                if match is not None and o - match[0] <= MAX_LATENCY_S:
                    open_ends.remove(match)
                    latencies.append(o - match[0])
        if dump is not None and dump_dir:
            for i, frames in enumerate(dump):
                np.savez(Path(dump_dir) / f"user-{i}.npz",
                         times=np.array([t for t, _ in frames]),
                         pcm=np.frombuffer(b"".join(d for _, d in frames), np.int16),
                         lengths=np.array([len(d) // 2 for _, d in frames]),
                         ends=np.array([e[0] for e in ends[i]]),
                         onsets=np.array([o[0] for o in onsets[i]]),
                         stats=np.array(stat_rows[i]), stat_keys=np.array(STAT_KEYS))
        print("@result", json.dumps({"latencies": latencies, "heard_hz": heard_hz[:200],
                                     "gaps": gaps[0], "onsets": len(heard_hz),
                                     "ends": sum(len(x) for x in ends)}), flush=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for room in rooms:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(room.disconnect(), 10)


# ----------------------------------------------------------------------------- report

METRICS = [  # key, label, target kind (None: no target)
    ("cpu_pct_per_job", "CPU % of a core per job", "cpu"),
    ("cpu_pct_total", "CPU % of a core, tree total", None),
    ("rss_steady_mib", "RSS MiB tree, steady", "mem"),
    ("rss_per_job_mib", "RSS MiB per job (steady/N)", "mem"),
    ("rss_peak_mib", "RSS MiB tree, peak", "mem"),
    ("pss_steady_mib", "PSS MiB tree, steady", None),
    ("pss_per_job_mib", "PSS MiB per job (steady/N)", None),
    ("rss_idle_mib", "RSS MiB tree before jobs", None),
    ("rss_added_per_job_mib", "RSS MiB added per job ((steady-before)/N)", None),
    ("pss_added_per_job_mib", "PSS MiB added per job ((steady-before)/N)", None),
    ("latency_median_ms", "answer latency median ms", "latency"),
    ("latency_p90_ms", "answer latency p90 ms", "latency"),
    ("answers", "answers detected", None),
    ("answer_gaps", "gaps (10-90 ms of quiet) inside answers heard", None),
    ("onsets_unmatched", "onsets heard that answer no burst (>= 100 ms break, repeat)", None),
]


def with_derived(r: dict[str, Any]) -> dict[str, Any]:
    n = r["jobs"]
    return {**r, "rss_per_job_mib": r["rss_steady_mib"] / n,
            "pss_per_job_mib": r["pss_steady_mib"] / n,
            "rss_added_per_job_mib": (r["rss_steady_mib"] - r["rss_idle_mib"]) / n,
            "pss_added_per_job_mib": (r["pss_steady_mib"] - r["pss_idle_mib"]) / n}


def table(server: str, jobs: int, ours: dict[str, Any], off: dict[str, Any]) -> list[str]:
    ours, off = with_derived(ours), with_derived(off)
    out = [f"server {server}, {jobs} job(s) in one worker (tree at most {ours['procs']} "
           f"processes ours, {off['procs']} official); bursts answered: ours "
           f"{ours['answers']}/{ours['bursts']}, official {off['answers']}/{off['bursts']}; "
           f"burst phase {ours['window_s']:.1f} s / {off['window_s']:.1f} s; users process "
           f"CPU {ours['users_cpu_pct']:.0f}% / {off['users_cpu_pct']:.0f}%, harness (hosts "
           f"the embedded server) {ours['harness_cpu_pct']:.0f}% / "
           f"{off['harness_cpu_pct']:.0f}%",
           "| metric | aiolivekit | official | ours/official | target | met |",
           "|---|---|---|---|---|---|"]
    for key, label, kind in METRICS:
        a, b = float(ours[key]), float(off[key])
        ratio = a / b if b else float("nan")
        target = f"<= {TARGET_RATIO[kind]:g}x" if kind else ""
        met = ("yes" if ratio <= TARGET_RATIO[kind] else "NO") if kind else ""
        out.append(f"| {label} | {a:.1f} | {b:.1f} | {ratio:.2f} | {target} | {met} |")
    return out


def setup_text(bursts: int) -> str:
    return (f"livekit-agents 1.8.9 worker (bench/agent_tone_app.py: AgentSession, energy VAD "
            "with 0.2 s hangover, FFT 'STT', 'LLM' answering f + 1000 Hz, TTS tone of that "
            "through RoomIO), "
            "one job process per room + 1 idle; official = livekit 1.1.21 wheel, ours = "
            "AIOLIVEKIT_AS_LIVEKIT_RTC=1; users: one aiolivekit process, one user per room, "
            f"{TONE_S} s burst ({'/'.join(map(str, SPEAK_HZ))} Hz in turn) + {GAP_S} s silence x "
            f"{bursts}, users staggered; CPU user+sys and "
            "RSS/PSS summed over the worker's process tree during the burst phase; latency = "
            "end of burst (capture) -> first answer frame at the user app (20 ms frames)")


async def run_matrix(servers: dict[str, ServerInfo], jobs_list: list[int], bursts: int,
                     sdks: list[str], log: Any) -> list[dict[str, Any]]:
    results = []
    for name, info in servers.items():
        for j, jobs in enumerate(jobs_list):
            order = sdks if j % 2 == 0 else list(reversed(sdks))
            for sdk in order:
                log(f"{name}: {sdk} worker, {jobs} job(s), load {os.getloadavg()[0]:.2f}")
                try:
                    r = await measure(info, sdk, jobs, bursts, log)
                except Exception as exc:  # noqa: BLE001  (reported in the output)
                    log(f"{name}: {sdk} {jobs} job(s) FAILED: {exc!r}")
                    results.append({"server": name, "sdk": sdk, "jobs": jobs,
                                    "error": repr(exc)})
                    continue
                r["server"] = name
                log(f"  {json.dumps(r)}")
                results.append(r)
    return results


def unit(key: str) -> str:
    return ("% of a core" if key.startswith("cpu") else "MiB" if key.endswith("_mib")
            else "ms" if key.endswith("_ms") else "count")


async def run(ctx: BenchContext) -> list[dict[str, Any]]:
    """For bench/run.py: livekit-server if present else embedded; 1 and 10 jobs."""
    if not AGENTS_PYTHON.exists():
        ctx.log(f"bench_agents: no livekit-agents venv ({AGENTS_PYTHON}); skipped")
        return []
    servers = {"livekit-server": ctx.livekit} if ctx.livekit else {"embedded": ctx.embedded}
    bursts = 4 if ctx.quick else 10
    results = await run_matrix({k: v for k, v in servers.items() if v is not None},
                               [1] if ctx.quick else [1, 10], bursts,
                               ["official", "aiolivekit"], ctx.log)
    rows = []
    for r in results:
        if "error" in r:
            continue
        r = with_derived(r)
        for key, _label, _kind in METRICS:
            rows.append(row(f"agents_{r['jobs']}_jobs [server={r['server']}]", r["sdk"], key,
                            r[key], unit(key), setup=setup_text(bursts)))
    return rows


async def main_async(args: argparse.Namespace) -> int:
    from aiolivekit.testing.netns import in_private_netns
    from aiolivekit.testing.servers import LiveKitServerProcess, find_livekit_server

    if not in_private_netns():
        print("run inside scripts/netns-run", file=sys.stderr)
        return 2
    if not AGENTS_PYTHON.exists():
        print(f"no livekit-agents venv at {AGENTS_PYTHON} (scripts/install-agents-venv)",
              file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    load0 = os.getloadavg()
    wanted = args.servers.split(",")
    jobs_list = [int(x) for x in args.jobs.split(",")]
    results: list[dict[str, Any]] = []
    async with contextlib.AsyncExitStack() as stack:
        servers: dict[str, ServerInfo] = {}
        if "livekit-server" in wanted:
            binary = find_livekit_server()
            if binary is None:
                log("livekit-server not found: skipped")
            else:
                proc = await stack.enter_async_context(LiveKitServerProcess(
                    binary, log_path=tempfile.mkstemp(prefix="bench-agents-lks-")[1]))
                servers["livekit-server"] = proc.info()
        if "embedded" in wanted:
            from aiolivekit.server import DevServer

            dev = await stack.enter_async_context(DevServer(port=0))
            servers["embedded"] = ServerInfo("embedded", dev.url, dev.api_key, dev.api_secret)
        results = await run_matrix(servers, jobs_list, args.bursts, args.sdks.split(","), log)
    load1 = os.getloadavg()
    print(f"Setup: {setup_text(args.bursts)}.")
    print(f"Machine: {os.cpu_count()} CPUs; load average (1/5/15 min) at start "
          f"{load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, at end "
          f"{load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f}.")
    for r in results:
        if "error" in r:
            print(f"FAILED {r['server']} {r['sdk']} {r['jobs']} job(s): {r['error']}")
    by = {(r["server"], r["jobs"], r["sdk"]): r for r in results if "error" not in r}
    for server in dict.fromkeys(r["server"] for r in results):
        for jobs in jobs_list:
            ours, off = by.get((server, jobs, "aiolivekit")), by.get((server, jobs, "official"))
            if ours and off:
                print()
                print("\n".join(table(server, jobs, ours, off)))
    if args.json:
        out = json.dumps({"load": [load0, load1], "results": results}, indent=1)
        Path(args.json).write_text(out)  # noqa: ASYNC240  (once, at the end)
    return 0 if all("error" not in r for r in results) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", default="1,10")
    ap.add_argument("--bursts", type=int, default=10)
    ap.add_argument("--servers", default="livekit-server,embedded")
    ap.add_argument("--sdks", default="official,aiolivekit")
    ap.add_argument("--json", default="", help="also write the results here")
    ap.add_argument("--server-log", action="store_true",
                    help="log the embedded server's agent dispatch (INFO) to stderr")
    ap.add_argument("--users", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.users:
        try:
            asyncio.run(users_main(json.loads(args.users)))
        except Exception as exc:  # noqa: BLE001  (reported to the harness)
            print(f"@error {exc!r}", flush=True)
            return 1
        return 0
    if args.server_log:
        import logging

        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
        logging.getLogger("aiolivekit.server.agent_dispatch").setLevel(logging.INFO)
        logging.getLogger("aiolivekit.server.agent_service").setLevel(logging.INFO)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
