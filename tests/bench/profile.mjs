// Where a decode step's time goes in the tab: runs greedy decoding of a model folder (or, with
// JOB=widget, the bench's widget job from jobs.json) with the relaxed-simd build on a page's
// main thread in headless Chromium under the CPU profiler, and prints the share of samples per
// function (self time). Not a test, and not part of the bench.
//   node tests/bench/profile.mjs MODEL_DIR [DTYPE=q8_0] [TOKENS=128] [JOB=greedy|widget]
// It needs the relaxed-simd build's wasm from `./build.sh` (target/relaxed/…/botcard.wasm):
// wasm-bindgen is run again on it without --remove-name-section, into target/profile/, so that
// the profile names Rust functions.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { browser, mockHub, ROOT, staticServer } from '../e2e/helpers.mjs';

const [dir, dtype = 'q8_0', tokens = '128', job = 'greedy'] = process.argv.slice(2);
if (!dir || !['greedy', 'widget'].includes(job)) throw new Error('usage: node tests/bench/profile.mjs MODEL_DIR [DTYPE] [TOKENS] [greedy|widget]');
const JOBS = JSON.parse(readFileSync(new URL('./jobs.json', import.meta.url), 'utf8'));
const out = join(ROOT, 'target/profile');
mkdirSync(out, { recursive: true });
execFileSync('wasm-bindgen', ['--target', 'web', '--no-typescript', '--out-dir', join(out, 'pkg-relaxed'),
  join(ROOT, 'target/relaxed/wasm32-unknown-unknown/wasm-release/botcard.wasm')]);

const site = await staticServer({ root: out, extraPages: { '/profile.html': () => '<!doctype html><title>profile</title>' } });
const hub = await mockHub({ repos: { 'local/model': resolve(dir) } });
const b = await browser();
try {
  const p = await b.newPage();
  await p.goto(`${site.url}/profile.html`);
  // The model loaded as the worker loads it (the files the library asks for, in its order).
  await p.evaluate(async ([base, dtype]) => {
    const lib = await import('/pkg-relaxed/botcard.js');
    await lib.default();
    const loader = new lib.WasmLoader(dtype);
    const known = {};
    for (let name; (name = lib.nextModelFile(known)) !== undefined;) {
      const res = await fetch(base + name);
      known[name] = res.ok;
      if (!res.ok) continue;
      const bytes = new Uint8Array(await res.arrayBuffer());
      if (lib.isStreamed(name)) loader.push(name, bytes); else loader.add(name, bytes);
    }
    self.bot = loader.finish();
    /** Runs `settings` after "My dream is"; returns new tokens (of all sequences) per second. */
    self.run = (settings) => {
      const s = self.bot.start('My dream is', settings);
      const t = performance.now();
      let k = 0;
      while (!s.isDone()) k += s.step(self.bot).length;
      const seconds = (performance.now() - t) / 1000;
      s.free();
      return k / seconds;
    };
    self.run({ do_sample: 'false', max_new_tokens: '8' }); // warm-up: the optimizing compiler takes over the hot functions
  }, [`${hub.url}/local/model/resolve/main/`, dtype]);
  const cdp = await p.context().newCDPSession(p);
  await cdp.send('Profiler.enable');
  await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
  await cdp.send('Profiler.start');
  const settings = job === 'widget'
    ? { ...JOBS.widget.settings, max_new_tokens: tokens, min_new_tokens: tokens }
    : { do_sample: 'false', max_new_tokens: tokens, min_new_tokens: tokens };
  const rate = await p.evaluate((s) => self.run(s), settings);
  const { profile } = await cdp.send('Profiler.stop');
  const self_ = new Map();
  let total = 0;
  for (const n of profile.nodes) {
    const name = n.callFrame.functionName || `(${n.callFrame.url.split('/').pop() || 'program'})`;
    self_.set(name, (self_.get(name) ?? 0) + n.hitCount);
    total += n.hitCount;
  }
  console.log(`${dtype}, 1 thread, ${job}: ${rate.toFixed(1)} tok/s; self time by function:`);
  for (const [name, hits] of [...self_].sort((a, c) => c[1] - a[1]).slice(0, 20)) {
    console.log(`${(100 * hits / total).toFixed(1).padStart(5)}%  ${name.replace(/::h[0-9a-f]{16}$/, '')}`);
  }
} finally {
  await b.close();
  await site.close();
  await hub.close();
}
