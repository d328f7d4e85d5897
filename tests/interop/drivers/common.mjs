// Shared plumbing for the JS drivers: JSON-lines output, the inbox that expect_* steps
// consume, stdin signals, the global deadline and the step loop. See tests/interop/README.md.
import readline from 'node:readline';

const T0 = performance.now();

// Chromium's flags for every browser driver: headless, fake camera and microphone, no
// network of its own (no background requests, sync or component updates), real host
// candidates (no mDNS names) so ICE stays on loopback / the test namespace.
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream', '--autoplay-policy=no-user-gesture-required',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

export function emit(obj) {
  if (obj.t === undefined) obj.t = Math.round(performance.now() - T0) / 1000;
  process.stdout.write(JSON.stringify(obj, (k, v) => (typeof v === 'bigint' ? Number(v) : v)) + '\n');
}

export function describeBytes(u8) {
  const out = { size: u8.length };
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(u8);
    out.payload = text.length <= 4096 ? text : text.slice(0, 64) + '...';
  } catch { /* not text */ }
  if (u8.length <= 4096) out.payload_b64 = Buffer.from(u8).toString('base64');
  return out;
}

export function payloadBytes(step) {
  if (step.payload_b64 !== undefined) return new Uint8Array(Buffer.from(step.payload_b64, 'base64'));
  let p = step.payload ?? '';
  if (step.repeat) p = p.repeat(step.repeat);
  return new TextEncoder().encode(p);
}

export function repeatText(step, key = 'text') {
  let t = step[key] ?? '';
  if (step.repeat) t = t.repeat(step.repeat);
  return t;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class Inbox {
  constructor() { this.items = {}; this.waiters = new Set(); }
  put(kind, item) {
    (this.items[kind] ??= []).push(item);
    for (const w of this.waiters) w();
  }
  async take(kind, count, timeoutS, match = {}) {
    const matching = () => (this.items[kind] ?? []).filter(
      (g) => Object.entries(match).every(([k, v]) => g[k] === v));
    const deadline = Date.now() + timeoutS * 1000;
    while (matching().length < count && Date.now() < deadline) {
      await new Promise((resolve) => {
        const w = () => { this.waiters.delete(w); clearTimeout(timer); resolve(); };
        const timer = setTimeout(w, Math.max(1, deadline - Date.now()));
        this.waiters.add(w);
      });
    }
    const got = matching().slice(0, count);
    this.items[kind] = (this.items[kind] ?? []).filter((g) => !got.includes(g));
    return got;
  }
  async expect(kind, step, keys) {
    const count = step.count ?? 1;
    const match = {};
    for (const k of keys) if (step[k] !== undefined) match[k] = step[k];
    const items = await this.take(kind, count, step.timeout ?? 10, match);
    const res = { items, received: items.length };
    if (items.length < count) { res.ok = false; res.error = `expected ${count} ${kind}, got ${items.length}`; }
    return res;
  }
}

// In-place radix-2 FFT magnitude peak with a Hann window and parabolic refinement.
export function dominantFrequency(samples, sampleRate) {
  let n = 1;
  while (n * 2 <= samples.length) n *= 2;
  if (n < 256) return 0;
  const re = new Float64Array(n), im = new Float64Array(n);
  let mean = 0;
  for (let i = 0; i < n; i++) mean += samples[i];
  mean /= n;
  for (let i = 0; i < n; i++) re[i] = (samples[i] - mean) * (0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (n - 1)));
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) { [re[i], re[j]] = [re[j], re[i]]; [im[i], im[j]] = [im[j], im[i]]; }
  }
  for (let len = 2; len <= n; len <<= 1) {
    const ang = (-2 * Math.PI) / len, wr = Math.cos(ang), wi = Math.sin(ang);
    for (let i = 0; i < n; i += len) {
      let cr = 1, ci = 0;
      for (let k = 0; k < len / 2; k++) {
        const ar = re[i + k + len / 2] * cr - im[i + k + len / 2] * ci;
        const ai = re[i + k + len / 2] * ci + im[i + k + len / 2] * cr;
        re[i + k + len / 2] = re[i + k] - ar; im[i + k + len / 2] = im[i + k] - ai;
        re[i + k] += ar; im[i + k] += ai;
        const t = cr * wr - ci * wi; ci = cr * wi + ci * wr; cr = t;
      }
    }
  }
  const mag = new Float64Array(n / 2);
  let best = 1;
  for (let k = 1; k < n / 2; k++) { mag[k] = Math.hypot(re[k], im[k]); if (mag[k] > mag[best]) best = k; }
  let kf = best;
  if (best > 0 && best < n / 2 - 1) {
    const a = mag[best - 1], b = mag[best], c = mag[best + 1], d = a - 2 * b + c;
    if (d !== 0) kf = best + (0.5 * (a - c)) / d;
  }
  return (kf * sampleRate) / n;
}

// Reads the script (argv[2] as JSON, or the first stdin line when argv[2] is '-'); later
// stdin lines are signals for wait_signal steps.
export async function loadScript() {
  const arg = process.argv[2] ?? '-';
  const signals = [];
  const waiters = new Set();
  let scriptResolve;
  const scriptP = new Promise((r) => { scriptResolve = r; });
  let first = arg === '-';
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (first) { first = false; scriptResolve(JSON.parse(line)); return; }
    signals.push(line.trim());
    for (const w of waiters) w();
  });
  rl.on('close', () => { if (first) scriptResolve({ steps: [] }); });
  const script = arg === '-' ? await scriptP : JSON.parse(arg);
  async function waitSignal(name, timeoutS) {
    const deadline = Date.now() + timeoutS * 1000;
    for (;;) {
      const i = signals.indexOf(name);
      if (i >= 0) { signals.splice(i, 1); return; }
      if (Date.now() >= deadline) throw new Error(`signal '${name}' not received`);
      await new Promise((resolve) => {
        const w = () => { waiters.delete(w); clearTimeout(timer); resolve(); };
        const timer = setTimeout(w, Math.max(1, deadline - Date.now()));
        waiters.add(w);
      });
    }
  }
  return { script, waitSignal, closeStdin: () => rl.close() };
}

export function armDeadline(seconds, onFire) {
  const timer = setTimeout(async () => {
    emit({ event: 'deadline', seconds });
    try { await Promise.race([onFire?.(), sleep(3000)]); } catch { /* ignore */ }
    process.exit(3);
  }, seconds * 1000);
  timer.unref();
}

// Runs the steps with `ops[op](step)`; returns the number of failed steps.
export async function runSteps(script, ops) {
  let failures = 0;
  const list = script.steps ?? [];
  for (let i = 0; i < list.length; i++) {
    const step = list[i];
    const res = { op: step.op, step: i };
    if (step.label) res.label = step.label;
    const fn = ops[step.op];
    if (!fn) {
      Object.assign(res, { ok: false, error: `unknown op '${step.op}'` });
    } else {
      try {
        const out = (await fn(step)) ?? {};
        res.ok = true;
        Object.assign(res, out);
      } catch (e) {
        Object.assign(res, { ok: false, error: `${e?.name ?? 'Error'}: ${e?.message ?? e}` });
      }
    }
    emit(res);
    if (!res.ok) {
      failures += 1;
      if (!step.optional && script.stop_on_error !== false) break;
    }
  }
  return failures;
}

// What a monitor_tone_stop step returns (the same fields in official_py.py): the RMS of each
// 10 ms block (samples scaled to int16), the dominant frequency of the first and the last
// second, the longest wait between two delivered chunks. `freq` is dominantFrequency
// (passed in so that the page can use this function too).
export function toneReport(samples, rate, elapsed, maxGap, freq) {
  const block = Math.round(rate / 100), n = Math.floor(samples.length / block);
  const blockRms = [];
  for (let b = 0; b < n; b++) {
    let sq = 0;
    for (let i = b * block; i < (b + 1) * block; i++) sq += samples[i] * samples[i];
    blockRms.push(Math.round(Math.sqrt(sq / block) * 10) / 10);
  }
  const first = samples.subarray(0, Math.min(samples.length, rate));
  const last = samples.subarray(Math.max(0, samples.length - rate));
  return {
    rate, samples: samples.length, elapsed: Math.round(elapsed * 1000) / 1000,
    max_gap: Math.round(maxGap * 1000) / 1000, block_rms: blockRms,
    freq_first: Math.round(freq(first, rate) * 10) / 10, freq_last: Math.round(freq(last, rate) * 10) / 10,
  };
}
