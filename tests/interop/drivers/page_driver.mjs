// Drive the room page and the inspector of `aiolivekit serve` (served over HTTP by the
// server under test) in Debian's Chromium through playwright-core, like a user would:
// type into the form, click the buttons, read what the page shows. Same JSON step language
// and output as the other drivers (tests/interop/README.md); ops are listed in OPS below.
// Every request the page makes must go to the server under test (the page loads nothing
// from elsewhere, no CDN): any other request is aborted and fails the run.
// Usage: node page_driver.mjs '<json>' | -
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { emit, sleep, loadScript, armDeadline, runSteps, CHROMIUM_ARGS } from './common.mjs';

const HERE = path.dirname(new URL(import.meta.url).pathname);
const require = createRequire(path.join(HERE, '..', 'js', 'package.json'));
const pw = await import(require.resolve('playwright-core'));
const chromium = pw.chromium ?? pw.default.chromium;

const { script, waitSignal, closeStdin } = await loadScript();
let context = null;
let page = null;
let inspector = null;
const foreign = [];
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'lk-page-'));

async function shutdown() {
  try { if (context) await Promise.race([context.close(), sleep(5000)]); } catch { /* ignore */ }
  try { fs.rmSync(profile, { recursive: true, force: true }); } catch { /* ignore */ }
}
armDeadline(script.deadline ?? 90, shutdown);

// polls fn(arg) in the page until it returns a truthy value (returned) or the timeout
async function until(target, fn, arg, timeoutS, what) {
  const deadline = Date.now() + timeoutS * 1000;
  let last = null;
  for (;;) {
    last = await target.evaluate(fn, arg);
    if (last && last.ok) return last;
    if (Date.now() > deadline) throw new Error(`${what}: not seen in ${timeoutS} s (last: ${JSON.stringify(last)})`);
    await sleep(200);
  }
}

const OPS = {
  async sleep(s) { await sleep((s.seconds ?? 1) * 1000); return {}; },
  async wait_signal(s) { await waitSignal(s.name ?? 'go', s.timeout ?? 30); return { name: s.name ?? 'go' }; },

  // open the room page: {url}
  async open(s) {
    await page.goto(s.url, { timeout: 15000 });
    await page.waitForFunction(() => !!window.LivekitClient && !!document.getElementById('join'), null, { timeout: 15000 });
    return { title: await page.title(), livekit_client: await page.evaluate(() => window.LivekitClient.version) };
  },

  // fill the join form and click join: {room, identity, name?, mic?, camera?, timeout?}
  async join(s) {
    await page.fill('#room', s.room);
    await page.fill('#identity', s.identity);
    if (s.name) await page.fill('#name', s.name);
    if (s.token) await page.fill('#token', s.token);
    await page.setChecked('#with-mic', s.mic ?? true);
    await page.setChecked('#with-camera', s.camera ?? true);
    await page.click('#join-button');
    await page.waitForFunction(() => ['connected', 'idle'].includes(document.body.dataset.state)
      && (document.body.dataset.state === 'connected' || !document.getElementById('join-error').hidden),
    null, { timeout: (s.timeout ?? 20) * 1000 });
    const state = await page.evaluate(() => ({
      state: document.body.dataset.state, error: document.getElementById('join-error').textContent,
      status: document.getElementById('status').textContent,
    }));
    if (state.state !== 'connected') throw new Error(`join failed: ${state.error}`);
    // our own tracks are published (mic/camera as asked)
    await page.waitForFunction((want) => (!want.mic || document.body.dataset.mic === 'on')
      && (!want.camera || document.body.dataset.camera === 'on'),
    { mic: s.mic ?? true, camera: s.camera ?? true }, { timeout: (s.timeout ?? 20) * 1000 });
    return state;
  },

  // the page joined by itself (?autojoin=1): {timeout?}
  async wait_connected(s) {
    await page.waitForFunction(() => document.body.dataset.state === 'connected', null,
      { timeout: (s.timeout ?? 20) * 1000 });
    return { status: await page.evaluate(() => document.getElementById('status').textContent) };
  },

  // a participant's tile has audio: the WebAudio analyser level and its peak frequency
  // {identity, min?, timeout?}
  async audio_level(s) {
    return until(page, ({ identity, min }) => {
      const tile = document.querySelector(`.tile[data-identity="${CSS.escape(identity)}"]`);
      if (!tile) return { ok: false, why: 'no tile' };
      const level = Number(tile.dataset.level || 0);
      return { ok: level >= min, level, peak_hz: Number(tile.dataset.peakHz || 0) };
    }, { identity: s.identity, min: s.min ?? 0.01 }, s.timeout ?? 20, `audio of ${s.identity}`);
  },

  // a participant's video element shows a picture: draws it into a canvas, reads the pixels
  // {identity, source?, timeout?}
  async video_pixels(s) {
    return until(page, ({ identity, source }) => {
      const tile = document.querySelector(`.tile[data-identity="${CSS.escape(identity)}"]`);
      const video = tile?.querySelector(`video[data-source="${source}"]`);
      if (!video) return { ok: false, why: 'no video element' };
      const w = video.videoWidth, h = video.videoHeight;
      if (!w || !h) return { ok: false, why: 'no frame yet' };
      const canvas = document.createElement('canvas');
      canvas.width = w; canvas.height = h;
      const ctx = canvas.getContext('2d', { willReadFrequently: true });
      ctx.drawImage(video, 0, 0, w, h);
      const px = ctx.getImageData(0, 0, w, h).data;
      let bright = 0, sum = 0, max = 0;
      for (let i = 0; i < px.length; i += 4) {
        const v = Math.max(px[i], px[i + 1], px[i + 2]);
        sum += (px[i] + px[i + 1] + px[i + 2]) / 3;
        if (v > max) max = v;
        if (v > 128) bright += 1;
      }
      const n = px.length / 4;
      return { ok: bright > 0, width: w, height: h, bright_fraction: bright / n, mean: sum / n, max,
        frames: video.getVideoPlaybackQuality?.().totalVideoFrames ?? null };
    }, { identity: s.identity, source: s.source ?? 'camera' }, s.timeout ?? 20, `video of ${s.identity}`);
  },

  // type a chat message and press send (a text stream on lk.chat): {text}
  async send_chat(s) {
    await page.fill('#chat-text', s.text);
    if (s.topic) await page.fill('#chat-topic', s.topic);
    await page.click(s.as_data ? '#data-send' : '#chat-send');
    await page.waitForFunction((text) => [...document.querySelectorAll('#log li')]
      .some((li) => li.querySelector('.text')?.textContent === text), s.text, { timeout: 10000 });
    return {};
  },

  // a line in the chat/data log: {text?, contains?, from?, kind?, timeout?}
  async expect_log(s) {
    return until(page, (want) => {
      const items = [...document.querySelectorAll('#log li')].map((li) => ({
        kind: li.dataset.kind, from: li.dataset.from, topic: li.dataset.topic,
        text: li.querySelector('.text')?.textContent ?? '',
      }));
      const hit = items.find((i) => (want.text === undefined || i.text === want.text)
        && (want.contains === undefined || i.text.includes(want.contains))
        && (want.from === undefined || i.from === want.from) && (want.kind === undefined || i.kind === want.kind));
      return { ok: !!hit, item: hit ?? null, log: hit ? undefined : items.slice(-10) };
    }, { text: s.text, contains: s.contains, from: s.from, kind: s.kind }, s.timeout ?? 10, 'log line');
  },

  // a participant's tile shows these attributes: {identity, attributes, timeout?}
  async expect_attributes(s) {
    return until(page, ({ identity, attributes }) => {
      const tile = document.querySelector(`.tile[data-identity="${CSS.escape(identity)}"]`);
      const got = JSON.parse(tile?.dataset.attributes || '{}');
      return { ok: Object.entries(attributes).every(([k, v]) => got[k] === v), attributes: got };
    }, { identity: s.identity, attributes: s.attributes }, s.timeout ?? 10, 'attributes');
  },

  // click the mic / camera / screen button: {button, expect: "on"|"off"}
  async toggle(s) {
    await page.click(`#${s.button}`);
    await page.waitForFunction(({ b, want }) => document.body.dataset[b] === want,
      { b: s.button, want: s.expect }, { timeout: 10000 });
    return { state: s.expect };
  },

  // open the inspector in a second tab until every identity has tracks with a bit rate
  // above min_bps: {url, identities, min_bps?, timeout?}
  async inspect(s) {
    inspector = inspector ?? (await context.newPage());
    await inspector.goto(s.url, { timeout: 15000 });
    return until(inspector, ({ identities, minBps }) => {
      const rows = [...document.querySelectorAll('tr.track')].map((tr) => ({
        identity: tr.dataset.identity, kind: tr.dataset.kind, bitrate: Number(tr.dataset.bitrate),
      }));
      const people = [...document.querySelectorAll('tr.participant')].map((tr) => tr.dataset.identity);
      const ok = identities.every((id) => people.includes(id)
        && ['audio', 'video'].every((k) => rows.some((r) => r.identity === id && r.kind === k && r.bitrate > minBps)));
      return { ok, participants: people, tracks: rows, status: document.getElementById('status').textContent };
    }, { identities: s.identities, minBps: s.min_bps ?? 0 }, s.timeout ?? 20, 'inspector rows');
  },

  // click an inspector action button: {action: "mute"|"remove", identity, kind?}
  async inspect_action(s) {
    const sel = s.action === 'remove'
      ? `button[data-action="remove"][data-identity="${s.identity}"]`
      : `tr.track[data-identity="${s.identity}"][data-kind="${s.kind}"] button[data-action="mute"]`;
    await inspector.evaluate(() => { delete document.getElementById('action-result').dataset.result; });
    await inspector.click(sel);
    await inspector.waitForFunction(() => document.getElementById('action-result').dataset.result,
      null, { timeout: 10000 });
    const out = await inspector.evaluate(() => ({
      result: document.getElementById('action-result').dataset.result,
      text: document.getElementById('action-result').textContent,
    }));
    if (out.result !== 'ok') throw new Error(out.text);
    return out;
  },

  // the inspector's "send data to everyone" form of a room: {room, topic?, text}
  async inspect_send_data(s) {
    const form = `section.room[data-room="${s.room}"] form.send-data`;
    await inspector.evaluate(() => { delete document.getElementById('action-result').dataset.result; });
    await inspector.fill(`${form} .data-topic`, s.topic ?? '');
    await inspector.fill(`${form} .data-text`, s.text);
    await inspector.click(`${form} button[type="submit"]`);
    await inspector.waitForFunction(() => document.getElementById('action-result').dataset.result,
      null, { timeout: 10000 });
    const out = await inspector.evaluate(() => ({
      result: document.getElementById('action-result').dataset.result,
      text: document.getElementById('action-result').textContent,
    }));
    if (out.result !== 'ok') throw new Error(out.text);
    return out;
  },

  async leave() {
    await page.click('#leave');
    await page.waitForFunction(() => document.body.dataset.state === 'disconnected', null, { timeout: 10000 });
    return {};
  },
};

let failures = 0;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.AIOLIVEKIT_CHROMIUM || '/usr/bin/chromium',
    headless: true, timeout: 30000, args: CHROMIUM_ARGS,
  });
  const allowed = new URL(script.origin).origin;
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(allowed + '/') || url === allowed || url.startsWith('data:') || url.startsWith('blob:')) {
      return route.continue();
    }
    foreign.push(url);
    emit({ event: 'foreign_request', url });
    return route.abort();
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (e) => emit({ event: 'pageerror', error: String(e) }));
  if (script.console) page.on('console', (m) => emit({ event: 'console', text: m.text() }));
  failures = await runSteps(script, OPS);
} catch (e) {
  emit({ event: 'crash', error: String(e?.stack ?? e) });
  failures += 1;
}
if (foreign.length) failures += 1;
await shutdown();
emit({ event: 'done', failures, foreign_requests: foreign });
closeStdin();
process.exit(failures ? 1 : 0);
