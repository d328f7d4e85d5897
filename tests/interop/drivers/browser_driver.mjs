// Drive livekit-client (UMD build) in Debian's Chromium through playwright-core, from a JSON
// step script (same language as official_py.py). Never downloads a browser.
// Usage: node browser_driver.mjs '<json>' | -
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  emit, sleep, dominantFrequency, loadScript, armDeadline, runSteps, CHROMIUM_ARGS,
} from './common.mjs';

const HERE = path.dirname(new URL(import.meta.url).pathname);
const require = createRequire(path.join(HERE, '..', 'js', 'package.json'));
const pw = await import(require.resolve('playwright-core'));
const chromium = pw.chromium ?? pw.default.chromium;

const { script, waitSignal, closeStdin } = await loadScript();
let context = null;
let page = null;
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'lk-chromium-'));

async function shutdown() {
  try { if (page) await Promise.race([page.evaluate(() => window.lkShutdown()), sleep(3000)]); } catch { /* ignore */ }
  try { if (context) await Promise.race([context.close(), sleep(5000)]); } catch { /* ignore */ }
  try { fs.rmSync(profile, { recursive: true, force: true }); } catch { /* ignore */ }
}
armDeadline(script.deadline ?? 90, shutdown);

const ARGS = CHROMIUM_ARGS;

let failures = 0;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.AIOLIVEKIT_CHROMIUM || '/usr/bin/chromium',
    headless: true, timeout: 30000, args: ARGS,
  });
  page = context.pages()[0] ?? (await context.newPage());
  await page.exposeFunction('lkEmit', (obj) => emit(obj));
  await page.addInitScript(`window.lkDominantFrequency = ${dominantFrequency.toString()};`);
  const { toneReport } = await import('./common.mjs');  // for monitor_tone_stop in the page
  await page.addInitScript(`window.lkToneReport = ${toneReport.toString()};`);
  // livekit-client's E2EE worker, loaded from a blob URL (a file:// page cannot start a
  // worker from a file URL)
  const workerSource = fs.readFileSync(
    path.join(HERE, '..', 'js', 'node_modules', 'livekit-client', 'dist', 'livekit-client.e2ee.worker.js'),
    'utf8');
  await page.addInitScript(`window.lkE2eeWorkerSource = ${JSON.stringify(workerSource)};`);
  if (script.console) page.on('console', (m) => emit({ event: 'console', text: m.text() }));
  page.on('pageerror', (e) => emit({ event: 'pageerror', error: String(e) }));
  await page.goto('file://' + path.join(HERE, 'page.html'));
  await page.waitForFunction(() => typeof window.lkStep === 'function' && window.LivekitClient, null, { timeout: 15000 });
  if (script.log_level) await page.evaluate((l) => window.LivekitClient.setLogLevel(l), script.log_level);

  const local = {
    async sleep(s) { await sleep((s.seconds ?? 1) * 1000); return {}; },
    async wait_signal(s) { await waitSignal(s.name ?? 'go', s.timeout ?? 30); return { name: s.name ?? 'go' }; },
  };
  const ops = new Proxy({}, {
    get(_, op) {
      if (op in local) return local[op];
      return async (s) => {
        if (!(await page.evaluate((o) => window.lkHasOp(o), op))) throw new Error(`unknown op '${op}'`);
        return page.evaluate((st) => window.lkStep(st), s);
      };
    },
  });
  failures = await runSteps(script, ops);
} catch (e) {
  emit({ event: 'crash', error: String(e?.stack ?? e) });
  failures += 1;
}
await shutdown();
emit({ event: 'done', failures });
closeStdin();
process.exit(failures ? 1 : 0);
