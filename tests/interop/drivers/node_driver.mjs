// Drive @livekit/rtc-node from a JSON step script (same language as official_py.py).
// Usage (cwd tests/interop/js so node_modules resolve): node ../drivers/node_driver.mjs '<json>' | -
import { createRequire } from 'node:module';
import path from 'node:path';
import {
  emit, describeBytes, payloadBytes, repeatText, sleep, Inbox, dominantFrequency,
  loadScript, armDeadline, runSteps, toneReport,
} from './common.mjs';

// resolve packages from tests/interop/js/node_modules whatever the cwd is
const require = createRequire(path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'js', 'package.json'));
const lk = await import(require.resolve('@livekit/rtc-node'));
// the FFI protobufs, for the E2EE requests rtc-node 1.1.0 builds incompletely (setKey)
const ffi = require('@livekit/rtc-ffi-bindings');
const {
  Room, RoomEvent, AudioSource, AudioStream, AudioFrame, LocalAudioTrack, TrackPublishOptions,
  TrackSource, TrackKind, RpcError, dispose, VideoSource, VideoFrame, VideoStream, LocalVideoTrack,
  VideoBufferType,
} = lk;

const { script, waitSignal, closeStdin } = await loadScript();
const room = new Room();
const inbox = new Inbox();
const background = [];
let stopping = false;

async function shutdown() {
  stopping = true;
  try { await Promise.race([room.disconnect(), sleep(5000)]); } catch { /* ignore */ }
  try { await Promise.race([dispose(), sleep(3000)]); } catch { /* ignore */ }
}
armDeadline(script.deadline ?? 60, shutdown);

room
  .on(RoomEvent.ParticipantConnected, (p) => emit({ event: 'participant_connected', identity: p.identity }))
  .on(RoomEvent.ParticipantDisconnected, (p) => emit({ event: 'participant_disconnected', identity: p.identity }))
  .on(RoomEvent.TrackSubscribed, (track, pub, p) => {
    const kind = track.kind === TrackKind.KIND_AUDIO ? 'audio' : 'video';
    emit({ event: 'track_subscribed', identity: p.identity, sid: pub.sid, kind, name: pub.name });
    inbox.put('track', { identity: p.identity, kind, track });
  })
  .on(RoomEvent.DataReceived, (payload, p, kind, topic) => {
    const item = { sender: p?.identity ?? null, topic: topic ?? '', ...describeBytes(payload) };
    emit({ event: 'data', ...item });
    inbox.put('data', item);
  })
  .on(RoomEvent.DtmfReceived, (code, digit, p) => {
    const item = { code, digit, sender: p?.identity ?? null };
    emit({ event: 'dtmf', ...item });
    inbox.put('dtmf', item);
  })
  .on(RoomEvent.Reconnecting, () => emit({ event: 'reconnecting', t: Date.now() / 1000 }))
  .on(RoomEvent.Reconnected, () => emit({ event: 'reconnected', t: Date.now() / 1000 }))
  .on(RoomEvent.Disconnected, (reason) => emit({ event: 'disconnected', reason: String(reason) }));

function listenStreams(topics) {
  for (const topic of topics ?? []) {
    try {
      room.registerTextStreamHandler(topic, (reader, info) => {
        background.push((async () => {
          const text = await reader.readAll();
          const item = {
            topic, sender: info.identity, text: text.length <= 4096 ? text : text.slice(0, 64) + '...',
            size: Buffer.byteLength(text), stream_id: reader.info.streamId,
            attributes: reader.info.attributes ?? {},
          };
          emit({ event: 'text', ...item });
          inbox.put('text', item);
        })().catch((e) => emit({ event: 'error', where: 'text_stream', error: String(e) })));
      });
    } catch { /* already registered */ }
    try {
      room.registerByteStreamHandler(topic, (reader, info) => {
        background.push((async () => {
          const chunks = await reader.readAll();
          const data = Buffer.concat(chunks.map((c) => Buffer.from(c)));
          const item = { topic, sender: info.identity, name: reader.info.name, ...describeBytes(data) };
          emit({ event: 'bytes', ...item });
          inbox.put('bytes', item);
        })().catch((e) => emit({ event: 'error', where: 'byte_stream', error: String(e) })));
      });
    } catch { /* already registered */ }
  }
}
listenStreams(script.stream_topics);

// rtc-node 1.1.0 turns the FFI's e2ee_state_changed into an event only for INTERNAL_ERROR:
// read the states from the FFI event stream (the same as the Python SDK's e2ee_state_changed)
let watchingE2ee = false;
function watchE2eeStates() {
  const client = globalThis._ffiClientInstance;
  if (watchingE2ee || !client) return;
  watchingE2ee = true;
  client.on('ffi_event', (ev) => {
    if (ev.message?.case !== 'roomEvent') return;
    const re = ev.message.value;
    if (re.message?.case !== 'e2eeStateChanged') return;
    emit({ event: 'e2ee_state', identity: re.message.value.participantIdentity ?? null,
      state: Number(re.message.value.state) });
  });
}

function e2eeRequest(message) {
  const kp = room.e2eeManager?.keyProvider;
  if (!kp) throw new Error('the room has no end-to-end encryption');
  return globalThis._ffiClientInstance.request({
    message: { case: 'e2ee', value: new ffi.E2eeRequest({ roomHandle: kp.roomHandle, message }) } });
}

let monitor = null;

const withTimeout = (p, s, what) => Promise.race([
  p, sleep(s * 1000).then(() => { throw new Error(`${what} timed out after ${s}s`); })]);

const ops = {
  async connect(s) {
    listenStreams(s.stream_topics);
    const t = performance.now();
    const opts = { autoSubscribe: s.auto_subscribe ?? true, dynacast: false };
    if (s.e2ee_key !== undefined) {  // end-to-end encryption (issue 17); "" = per-participant keys
      opts.encryption = { keyProviderOptions: {
        sharedKey: s.e2ee_key === '' ? undefined : new TextEncoder().encode(String(s.e2ee_key)),
        ratchetSalt: new TextEncoder().encode('LKFrameEncryptionKey'),
        ratchetWindowSize: s.e2ee_ratchet_window ?? 16, failureTolerance: s.e2ee_failure_tolerance ?? -1, keyRingSize: 16,
        keyDerivationFunction: s.e2ee_kdf === 'hkdf' ? 1 : 0,
      } };
    }
    await withTimeout(room.connect(s.url, s.token, opts), s.timeout ?? 20, 'connect');
    if (s.e2ee_key !== undefined) watchE2eeStates();
    const lp = room.localParticipant;
    return {
      identity: lp.identity, sid: lp.sid, room: room.name,
      connect_s: Math.round(performance.now() - t) / 1000,
      remote: [...room.remoteParticipants.keys()].sort(),
    };
  },
  async wait_participant(s) {
    const deadline = Date.now() + (s.timeout ?? 15) * 1000;
    while (Date.now() < deadline) {
      if (room.remoteParticipants.has(s.identity)) return { identity: s.identity };
      await sleep(50);
    }
    throw new Error(`participant ${s.identity} did not join`);
  },
  async wait_participant_gone(s) {
    const deadline = Date.now() + (s.timeout ?? 30) * 1000;
    while (Date.now() < deadline) {
      if (!room.remoteParticipants.has(s.identity)) return { identity: s.identity };
      await sleep(50);
    }
    throw new Error(`participant ${s.identity} did not leave`);
  },
  async send_data(s) {
    const data = payloadBytes(s);
    for (let i = 0; i < (s.count ?? 1); i++) {
      await room.localParticipant.publishData(data, {
        reliable: s.reliable ?? true, topic: s.topic ?? '', destination_identities: s.destinations ?? [],
      });
    }
    return { size: data.length };
  },
  expect_data: (s) => inbox.expect('data', s, ['topic', 'sender']),
  async publish_tone(s) {
    const rate = s.sample_rate ?? 48000, freq = s.freq, seconds = s.seconds ?? 5, amp = s.amplitude ?? 0.3;
    const source = new AudioSource(rate, 1);
    const track = LocalAudioTrack.createAudioTrack(s.name ?? 'tone', source);
    const opts = new TrackPublishOptions();
    opts.source = TrackSource.SOURCE_MICROPHONE;
    const pub = await withTimeout(room.localParticipant.publishTrack(track, opts), s.timeout ?? 15, 'publishTrack');
    const pump = (async () => {
      const spf = rate / 100;
      let n = 0;
      const start = performance.now();
      for (let i = 0; i < seconds * 100 && !stopping; i++) {
        const pcm = new Int16Array(spf);
        for (let j = 0; j < spf; j++, n++) pcm[j] = Math.round(amp * 32767 * Math.sin((2 * Math.PI * freq * n) / rate));
        await source.captureFrame(new AudioFrame(pcm, rate, 1, spf));
        const ahead = start + (i + 1) * 10 - performance.now();
        if (ahead > 20) await sleep(ahead - 20);
      }
      emit({ event: 'tone_done', freq });
    })();
    background.push(pump);
    if (s.wait) await pump;
    return { sid: pub.sid, freq };
  },
  async subscribe_detect_tone(s) {
    const got = await inbox.take('track', 1, s.timeout ?? 15, { identity: s.identity, kind: 'audio' });
    if (!got.length) throw new Error(`no audio track from ${s.identity}`);
    const rate = s.sample_rate ?? 48000;
    const stream = new AudioStream(got[0].track, rate, 1);
    const reader = stream.getReader();
    const skip = (s.skip ?? 0.5) * rate, want = (s.seconds ?? 1.5) * rate;
    const samples = new Float64Array(want);
    let skipped = 0, have = 0;
    const deadline = Date.now() + (s.timeout ?? 15) * 1000;
    while (have < want && Date.now() < deadline) {
      const r = await Promise.race([reader.read(), sleep(Math.max(1, deadline - Date.now())).then(() => null)]);
      if (!r || r.done) break;
      const pcm = r.value.data;
      if (skipped < skip) { skipped += pcm.length; continue; }
      for (let i = 0; i < pcm.length && have < want; i++) samples[have++] = pcm[i];
    }
    try { reader.releaseLock(); await stream.cancel(); } catch { /* ignore */ }
    if (!have) throw new Error('no audio frames received');
    const used = samples.subarray(0, have);
    let sq = 0;
    for (const v of used) sq += v * v;
    return {
      identity: s.identity, freq: Math.round(dominantFrequency(used, rate) * 10) / 10,
      rms: Math.round(Math.sqrt(sq / have) * 10) / 10, samples: have,
    };
  },
  async publish_video(s) {
    const w = s.width ?? 320, h = s.height ?? 240, fps = s.fps ?? 15, seconds = s.seconds ?? 5;
    const [r, g, b] = s.color ?? [200, 40, 40];
    const source = new VideoSource(w, h);
    const track = LocalVideoTrack.createVideoTrack(s.name ?? 'video', source);
    const opts = new TrackPublishOptions();
    opts.source = TrackSource.SOURCE_CAMERA;
    opts.simulcast = !!s.simulcast;
    const pub = await withTimeout(room.localParticipant.publishTrack(track, opts), s.timeout ?? 15, 'publishTrack');
    const rgba = new Uint8Array(w * h * 4);
    for (let i = 0; i < w * h; i++) { rgba[4 * i] = r; rgba[4 * i + 1] = g; rgba[4 * i + 2] = b; rgba[4 * i + 3] = 255; }
    background.push((async () => {
      const start = performance.now();
      for (let i = 0; i < seconds * fps && !stopping; i++) {
        source.captureFrame(new VideoFrame(rgba, w, h, VideoBufferType.RGBA));
        const ahead = start + ((i + 1) * 1000) / fps - performance.now();
        if (ahead > 0) await sleep(ahead);
      }
      emit({ event: 'video_done' });
    })());
    return { sid: pub.sid, width: w, height: h };
  },
  async subscribe_video(s) {
    const got = await inbox.take('track', 1, s.timeout ?? 15, { identity: s.identity, kind: 'video' });
    if (!got.length) throw new Error(`no video track from ${s.identity}`);
    const stream = new VideoStream(got[0].track);
    const reader = stream.getReader();
    const want = s.frames ?? 10;
    let frames = 0, last = null;
    const deadline = Date.now() + (s.timeout ?? 15) * 1000;
    while (frames < want && Date.now() < deadline) {
      const res = await Promise.race([reader.read(), sleep(Math.max(1, deadline - Date.now())).then(() => null)]);
      if (!res || res.done) break;
      frames += 1;
      last = res.value.frame;
    }
    try { reader.releaseLock(); await stream.cancel(); } catch { /* ignore */ }
    if (!last) throw new Error('no video frames received');
    const f = last.convert(VideoBufferType.RGBA);
    const cw = f.width, ch = f.height, sum = [0, 0, 0];
    let cnt = 0;
    for (let y = Math.floor(ch / 4); y < Math.floor((3 * ch) / 4); y++) {
      for (let x = Math.floor(cw / 4); x < Math.floor((3 * cw) / 4); x++) {
        const i = 4 * (y * cw + x);
        sum[0] += f.data[i]; sum[1] += f.data[i + 1]; sum[2] += f.data[i + 2]; cnt++;
      }
    }
    return { identity: s.identity, frames, width: cw, height: ch, mean_rgb: sum.map((v) => Math.round((v / cnt) * 10) / 10) };
  },
  async register_rpc(s) {
    const b = s.behaviour ?? { type: 'echo' };
    room.localParticipant.registerRpcMethod(s.method, async (data) => {
      emit({ event: 'rpc_invocation', method: s.method, caller: data.callerIdentity, payload: data.payload, request_id: data.requestId });
      if (b.type === 'sleep') await sleep((b.seconds ?? 1) * 1000);
      if (b.type === 'error') throw new RpcError(b.code ?? 1500, b.message ?? 'error', b.data);
      if (b.response !== undefined) return String(b.response);
      return data.payload;
    });
    return { method: s.method };
  },
  async perform_rpc(s) {
    const t = performance.now();
    const payload = repeatText(s, 'payload');
    try {
      const params = { destinationIdentity: s.dest, method: s.method, payload };
      if (s.timeout !== undefined) params.responseTimeout = s.timeout * 1000;
      const result = await room.localParticipant.performRpc(params);
      return { result, elapsed: Math.round(performance.now() - t) / 1000 };
    } catch (e) {
      if (e instanceof RpcError || e?.code !== undefined) {
        return { error: { code: e.code, message: e.message, data: e.data ?? '' }, elapsed: Math.round(performance.now() - t) / 1000 };
      }
      throw e;
    }
  },
  async send_text(s) {
    const text = repeatText(s);
    const opts = { topic: s.topic ?? '' };
    if (s.destinations?.length) opts.destinationIdentities = s.destinations;
    if (s.attributes) opts.attributes = s.attributes;
    const info = await room.localParticipant.sendText(text, opts);
    return { stream_id: info?.streamId ?? info?.id, size: Buffer.byteLength(text) };
  },
  async send_bytes(s) {
    const data = payloadBytes(s);
    const opts = { name: s.name ?? 'blob.bin', topic: s.topic ?? '', totalSize: data.length };
    if (s.destinations?.length) opts.destinationIdentities = s.destinations;
    const writer = await room.localParticipant.streamBytes(opts);
    await writer.write(data);
    await writer.close();
    return { stream_id: writer.info.streamId, size: data.length };
  },
  listen_streams: async (s) => { listenStreams(s.topics); return { topics: s.topics ?? [] }; },
  expect_text: (s) => inbox.expect('text', s, ['topic', 'sender']),
  expect_bytes: (s) => inbox.expect('bytes', s, ['topic', 'sender']),
  async publish_transcription(s) {
    await room.localParticipant.publishTranscription({
      participantIdentity: s.participant_identity ?? room.localParticipant.identity,
      trackSid: s.track_sid ?? '',
      segments: s.segments.map((g) => ({
        id: g.id, text: g.text, startTime: BigInt(g.start_time ?? 0), endTime: BigInt(g.end_time ?? 0),
        final: g.final ?? true, language: g.language ?? 'en',
      })),
    });
    return { segments: s.segments.length };
  },
  async publish_dtmf(s) { await room.localParticipant.publishDtmf(s.code, s.digit); return {}; },
  expect_dtmf: (s) => inbox.expect('dtmf', s, ['sender']),
  async e2ee_set_key(s) {
    // the shared key, or `identity`'s; `use`: our tracks encrypt with `index` from now on
    const kp = room.e2eeManager?.keyProvider;
    if (!kp) throw new Error('the room has no end-to-end encryption');
    const key = new TextEncoder().encode(String(s.key)), index = s.index ?? 0;
    if (s.identity) {
      // KeyProvider.setKey(identity, index) of rtc-node 1.1.0 has no key argument and sends
      // none: the same FFI request, with the key
      e2eeRequest({ case: 'setKey', value: new ffi.SetKeyRequest({
        participantIdentity: s.identity, key, keyIndex: index }) });
    } else {
      kp.setSharedKey(key, index);
    }
    if (s.use) {
      // FrameCryptor.setKeyIndex of rtc-node 1.1.0 sends no track sid (a required field:
      // "cannot encode field ...track_sid"), and frameCryptors() drops it: the FFI requests
      const res = e2eeRequest({ case: 'managerGetFrameCryptors', value: {} });
      for (const c of res.message.value.frameCryptors) {
        if (c.participantIdentity !== room.localParticipant.identity) continue;
        e2eeRequest({ case: 'cryptorSetKeyIndex', value: new ffi.FrameCryptorSetKeyIndexRequest({
          participantIdentity: c.participantIdentity, trackSid: c.trackSid, keyIndex: index }) });
      }
    }
    return { index };
  },
  async e2ee_ratchet(s) {
    const kp = room.e2eeManager?.keyProvider;
    if (!kp) throw new Error('the room has no end-to-end encryption');
    const index = s.index ?? 0;
    const key = s.identity ? kp.ratchetKey(s.identity, index) : kp.ratchetSharedKey(index);
    return { index, new_key_len: key?.length ?? 0 };
  },
  async monitor_tone(s) {
    const got = await inbox.take('track', 1, s.timeout ?? 15, { identity: s.identity, kind: 'audio' });
    if (!got.length) throw new Error(`no audio track from ${s.identity}`);
    inbox.put('track', got[0]);  // a later step may use the track again
    const stream = new AudioStream(got[0].track, 48000, 1);
    const reader = stream.getReader();
    const m = { chunks: [], start: performance.now(), maxGap: 0, stop: false, reader };
    m.loop = (async () => {
      let last = null;
      while (!m.stop) {
        const r = await reader.read();
        if (r.done) break;
        const now = performance.now();
        if (last !== null) m.maxGap = Math.max(m.maxGap, (now - last) / 1000);
        last = now;
        m.chunks.push(Int16Array.from(r.value.data));
      }
    })().catch((e) => emit({ event: 'error', where: 'monitor_tone', error: String(e) }));
    monitor = m;
    return { identity: s.identity };
  },
  async monitor_tone_stop() {
    const m = monitor;
    monitor = null;
    if (!m) throw new Error('monitor_tone_stop without monitor_tone');
    m.stop = true;
    try { await Promise.race([m.reader.cancel(), sleep(2000)]); } catch { /* ignore */ }
    await Promise.race([m.loop, sleep(2000)]);
    const total = m.chunks.reduce((n, c) => n + c.length, 0);
    const samples = new Float64Array(total);
    let off = 0;
    for (const c of m.chunks) { samples.set(c, off); off += c.length; }
    return toneReport(samples, 48000, (performance.now() - m.start) / 1000, m.maxGap, dominantFrequency);
  },
  async sleep(s) { await sleep((s.seconds ?? 1) * 1000); return {}; },
  async wait_signal(s) { await waitSignal(s.name ?? 'go', s.timeout ?? 30); return { name: s.name ?? 'go' }; },
  async disconnect(s) { await withTimeout(room.disconnect(), s.timeout ?? 10, 'disconnect'); return {}; },
  async local_publications() {
    return { sids: [...room.localParticipant.trackPublications.keys()].sort(),
      participant_sid: room.localParticipant.sid };
  },
};

let failures = 0;
try {
  failures = await runSteps(script, ops);
} catch (e) {
  emit({ event: 'crash', error: String(e?.stack ?? e) });
  failures += 1;
}
await shutdown();
emit({ event: 'done', failures });
closeStdin();
process.exit(failures ? 1 : 0);
