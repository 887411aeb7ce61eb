// The browser half of `./build.sh bench`: runs the real page's worker (www/worker.js, the one
// the widget uses) in headless Chromium, served as a plain static site, and prints one JSON line
// per dtype with the figures ../shared/peer measures for transformers.js: ready time (cold, and
// cached in the Cache API), prefill, batch-1 greedy decode, the widget job, peak memory.
// Also one line with the bytes the page downloads besides the model, gzipped.
//   node tests/bench/browser.mjs MODEL_DIR CONFIGS LABEL [ready]
// CONFIGS is a comma list of dtype:threads[:pkg] (q8_0:1,q8_0:2,f32:1,q8_0:1:pkg): threads 1
// is a plain page (the worker runs pkg-relaxed/), more is the page the service worker made
// cross-origin isolated (the worker then runs the threaded build on all cores); `pkg` keeps the
// relaxed-simd builds from loading, as in a browser without relaxed-simd. LABEL names the model
// in the lines; `ready` measures only the ready times and memory, as medians of a few cold
// visits. Not a test: nothing here passes or fails.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import { browser, mockHub, profileContext, staticServer } from '../e2e/helpers.mjs';
import { median } from './median.mjs';


const JOBS = JSON.parse(readFileSync(new URL('./jobs.json', import.meta.url), 'utf8'));
const dir = resolve(process.argv[2]);
const configs = process.argv[3].split(',').map((c) => c.split(':'))
  .map(([dtype, t, build]) => ({ dtype, isolated: Number(t || 1) > 1, plain: build === 'pkg' }));
const label = process.argv[4];
const readyOnly = process.argv[5] === 'ready';

// The page: a worker exactly as the widget starts it, and a function that runs one job.
const PAGE = `<!doctype html><meta charset="utf-8"><title>bench</title><script type="module">
const worker = new Worker('/worker.js', { type: 'module' });
let next = 0;
const pending = new Map();
worker.onmessage = ({ data }) => pending.get(data.id)?.(data);
// The worker's last message, for the bench to say where a run stalled.
let last = { at: performance.now(), type: 'none' };
worker.addEventListener('message', ({ data }) => { last = { at: performance.now(), type: data.type, file: data.file, loaded: data.loaded, message: data.message }; });
window.lastMessage = () => ({ ...last, ageS: (performance.now() - last.at) / 1000 });
// A model quantized at load is cached as held just after it is ready; a second visit is
// measured once that write is done, as a visitor who stayed a moment would make it.
let held = Promise.resolve();
worker.addEventListener('message', ({ data }) => { if (data.type === 'held') heldDone(data.ok); });
let heldDone = () => {};
const request = (msg, seen = () => {}) => new Promise((resolve, reject) => {
  const id = ++next;
  pending.set(id, (d) => {
    seen(d, performance.now());
    if (d.type === 'error') reject(new Error(d.message));
    if (['loaded', 'done', 'info'].includes(d.type)) { pending.delete(id); resolve(d); }
  });
  worker.postMessage({ ...msg, id });
});
let loaded = null;
window.load = async (base, dtype) => {
  held = new Promise((resolve) => { heldDone = resolve; });
  loaded = await request({ type: 'load', widget: 'bench', base, dtype, params: {} });
  if (!loaded.holding) heldDone(true);
  return performance.now() / 1000;
};
window.weightBytes = () => loaded.weightBytes;
window.held = () => held;
window.heldAs = () => loaded.heldAs;
window.info = () => request({ type: 'info' });
window.isolate = async () => { await navigator.serviceWorker.register('/sw.js'); await navigator.serviceWorker.ready; };
window.copyBandwidth = () => {
  const n = 256 << 20;
  const a = new Uint8Array(n).fill(1);
  const b = new Uint8Array(n);
  let best = 0;
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    b.set(a);
    best = Math.max(best, (2 * n) / ((performance.now() - t) / 1000) / 1e9);
  }
  return best;
};
// A wasm module that sums 128 bytes of its (imported) memory per step into eight f32x4 totals
// (so the loop waits on memory, not on adds): sum(start, end) reads bytes [start, end). Written
// out here because the bench needs no wasm toolchain of its own.
const PAGES = 4097; // 256 MB and a page
function readModule(shared) {
  const leb = (v) => { const out = []; do { let b = v & 0x7f; v >>>= 7; if (v) b |= 0x80; out.push(b); } while (v); return out; };
  const name = (s) => [s.length, ...[...s].map((c) => c.charCodeAt(0))];
  const TOTALS = 8;
  const body = [
    0x01, TOTALS, 0x7b, // locals: eight v128 totals (after the params start and end)
    0x03, 0x40, // loop
    // total[a] = f32x4.add(total[a], v128.load offset=16a (start))
    ...Array.from({ length: TOTALS }, (_, a) => [0x20, 2 + a, 0x20, 0x00, 0xfd, 0x00, 0x04, ...leb(16 * a), 0xfd, 0xe4, 0x01, 0x21, 2 + a]).flat(),
    0x20, 0x00, 0x41, 0x80, 0x01, 0x6a, 0x22, 0x00, // start += 128
    0x20, 0x01, 0x49, 0x0d, 0x00, // br_if start < end
    0x0b,
    0x20, 0x02, ...Array.from({ length: TOTALS - 1 }, (_, a) => [0x20, 3 + a, 0xfd, 0xe4, 0x01]).flat(),
    0xfd, 0x1f, 0x00, // f32x4.extract_lane 0
    0x0b,
  ];
  const section = (id, content) => [id, ...leb(content.length), ...content];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [0x01, 0x60, 0x02, 0x7f, 0x7f, 0x01, 0x7d]), // (i32, i32) -> f32
    ...section(2, [0x01, ...name('e'), ...name('m'), 0x02, shared ? 0x03 : 0x01, ...leb(PAGES), ...leb(PAGES)]), // memory e.m
    ...section(3, [0x01, 0x00]),
    ...section(7, [0x01, ...name('sum'), 0x00, 0x00]),
    ...section(10, [0x01, ...leb(body.length), ...body]),
  ]);
}
// A Web Worker that reads its share of the memory once per pass, the passes of all workers
// started together (a barrier on ctl[0]); it answers each pass's [start, end] in ms since the
// epoch.
const READER = \`onmessage = async ({ data: { module, memory, start, end, ctl, workers, passes } }) => {
  const { exports } = await WebAssembly.instantiate(module, { e: { m: memory } });
  const c = new Int32Array(ctl);
  const times = [];
  for (let p = 1; p <= passes; p++) {
    if (Atomics.add(c, 0, 1) + 1 === workers * p) Atomics.notify(c, 0);
    for (let seen; (seen = Atomics.load(c, 0)) < workers * p;) Atomics.wait(c, 0, seen);
    const t = performance.timeOrigin + performance.now();
    exports.sum(start, end);
    times.push([t, performance.timeOrigin + performance.now()]);
  }
  postMessage(times);
};\`;
/** The best of a few passes over 256 MB in wasm, in GB/s read: on this thread, or split over
 * as many Web Workers on shared memory as asked (as the threaded build's pool reads its
 * weights; the page must be cross-origin isolated). */
window.readBandwidth = async (workers = 1) => {
  const n = 256 << 20;
  const passes = 8;
  const shared = workers > 1;
  const module = await WebAssembly.compile(readModule(shared));
  const memory = new WebAssembly.Memory({ initial: PAGES, maximum: PAGES, shared });
  // Written first, so that the pages read are real memory, not the zero page.
  new Uint8Array(memory.buffer, 0, n).fill(1);
  let times;
  if (!shared) {
    const { exports } = await WebAssembly.instantiate(module, { e: { m: memory } });
    times = [Array.from({ length: passes }, () => {
      const t = performance.timeOrigin + performance.now();
      exports.sum(0, n);
      return [t, performance.timeOrigin + performance.now()];
    })];
  } else {
    const url = URL.createObjectURL(new Blob([READER], { type: 'text/javascript' }));
    const ctl = new SharedArrayBuffer(4);
    const share = n / workers;
    times = await Promise.all(Array.from({ length: workers }, (_, i) => new Promise((resolve, reject) => {
      const w = new Worker(url);
      w.onmessage = ({ data }) => { w.terminate(); resolve(data); };
      w.onerror = (e) => reject(new Error(e.message));
      w.postMessage({ module, memory, start: i * share, end: (i + 1) * share, ctl, workers, passes });
    })));
    URL.revokeObjectURL(url);
  }
  let best = 0;
  for (let p = 0; p < passes; p++) {
    const seconds = (Math.max(...times.map((t) => t[p][1])) - Math.min(...times.map((t) => t[p][0]))) / 1000;
    best = Math.max(best, n / seconds / 1e9);
  }
  return best;
};
window.job = async (prompt, params) => {
  const t0 = performance.now();
  let started = null;
  const tokens = [];
  const done = await request({ type: 'generate', widget: 'bench', prompt, params }, (d, t) => {
    if (d.type === 'started') started = t - t0;
    if (d.type === 'tokens') for (const _ of d.tokens) tokens.push(t - t0);
  });
  return { startedMs: started, tokenMs: tokens, totalMs: performance.now() - t0, sequences: done.sequences.length };
};
</script>`;

/** Seconds without a message from the worker after which a wait is given up: a load sends
 * progress and a generation tokens every few seconds at most. The error says what the worker
 * said last, instead of the bench waiting for good. */
const STALL_S = 120;

/** `p.evaluate(fn, arg)` for a wait on the worker (a load, a job, the cache write, info). */
async function watched(p, fn, arg) {
  let timer;
  const stalled = new Promise((_, reject) => {
    timer = setInterval(async () => {
      const said = await p.evaluate(() => window.lastMessage()).catch(() => null);
      if (said?.ageS > STALL_S) reject(new Error(`the worker has said nothing for ${STALL_S} s; its last message: ${JSON.stringify(said)}`));
    }, 5000);
  });
  try {
    return await Promise.race([p.evaluate(fn, arg), stalled]);
  } finally {
    clearInterval(timer);
  }
}

/** Cold visits per model in `ready` mode. */
const VISITS = 3;

/** Peak resident memory (VmHWM) of Chromium renderer processes not in `before`, in bytes. */
function rendererPeak(before) {
  let peak = 0;
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    if (before.has(pid)) continue;
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (!cmd.includes('--type=renderer')) continue;
      const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmHWM:\s+(\d+) kB/);
      if (m) peak = Math.max(peak, Number(m[1]) * 1024);
    } catch { /* gone */ }
  }
  return peak;
}
const pids = () => new Set(readdirSync('/proc').filter((p) => /^\d+$/.test(p)));

/** Runs `fn` once to warm up and `reps` more times; returns the timed results. */
async function timed(reps, fn) {
  await fn(-1);
  const out = [];
  for (let i = 0; i < reps; i++) out.push(await fn(i));
  return out;
}

/** A fresh browser profile (on disk, so that a second visit finds an f32 checkpoint in the
 * cache) and its bench page: plain, or (`isolated`) as a second visit to the real page, made
 * cross-origin isolated by the service worker; `plain` keeps the relaxed-simd builds from
 * loading. */
async function open(isolated, plain) {
  const context = await profileContext();
  if (plain) await context.route(/\/pkg-(relaxed|threads)\//, (route) => route.fulfill({ status: 404, body: '' }));
  let p = await context.newPage();
  await p.goto(`${site.url}/bench.html`);
  if (isolated) {
    await p.evaluate(() => window.isolate());
    await p.close();
    p = await context.newPage();
    await p.goto(`${site.url}/bench.html`);
    if (!await p.evaluate(() => self.crossOriginIsolated)) throw new Error('the service worker did not isolate the page');
  }
  const { threads, build } = await watched(p, () => window.info());
  return { context, p, threads, build };
}

/** A second visit, once the model is cached (as held, where it is): page `p` closes and a new
 * page of its context loads the model from the Cache API. Returns that page and its ready time. */
async function secondVisit(context, p, dtype) {
  await watched(p, () => window.held());
  const p2 = await context.newPage();
  await p.close();
  await p2.goto(`${site.url}/bench.html`);
  return { p2, readyCached: await watched(p2, ([u, d]) => window.load(u, d), [base, dtype]) };
}

/** One visit in a fresh renderer: the model loaded cold (and cached as held), the renderer's
 * peak memory, then a second visit. */
async function visit(dtype, isolated, plain) {
  const before = pids();
  const { context, p, threads, build } = await open(isolated, plain);
  const readyCold = await watched(p, ([u, d]) => window.load(u, d), [base, dtype]);
  const weightBytes = await p.evaluate(() => window.weightBytes());
  const held = await p.evaluate(() => window.heldAs());
  await watched(p, () => window.held());
  const peak = rendererPeak(before);
  const { readyCached } = await secondVisit(context, p, dtype);
  await context.close();
  return { threads, build, held, weightBytes, readyCold, readyCached, peak };
}

const site = await staticServer({ extraPages: { '/bench.html': () => PAGE } });
const hub = await mockHub({ repos: { 'local/model': dir } });
const base = `${hub.url}/local/model/resolve/main/`;
const b = await browser();
const version = b.version();
try {
  for (const { dtype, isolated, plain } of configs) {
    if (readyOnly) {
      // Memory at load moves by tens of MB between visits (when the garbage of streaming the
      // download is collected): the median of a few cold visits, each a fresh renderer.
      const visits = [];
      for (let i = 0; i < VISITS; i++) visits.push(await visit(dtype, isolated, plain));
      const mid = (key) => median(visits.map((v) => v[key]));
      const { threads, build, held } = visits[0];
      console.log(JSON.stringify({
        engine: 'botcard tab', model: label, dtype: held, threads, build, chromium: version,
        ready_cold_s: mid('readyCold'), ready_cached_s: mid('readyCached'), weight_bytes: visits[0].weightBytes,
        peak_memory_bytes: mid('peak'), peak_memory_visits: visits.map((v) => v.peak),
      }));
      continue;
    }
    const before = pids();
    const { context, p, threads, build } = await open(isolated, plain);
    const readyCold = await watched(p, ([u, d]) => window.load(u, d), [base, dtype]);
    const weightBytes = await p.evaluate(() => window.weightBytes());
    // What the weights are held as: the dtype asked for, or a pre-quantized model.gguf's own.
    const held = await p.evaluate(() => window.heldAs());
    const run = (prompt, settings) => watched(p, ([t, s]) => window.job(t, s), [prompt, settings]);
    const prefill = await timed(JOBS.reps, async () => {
      const r = await run(JOBS.prefill.prompt, JOBS.prefill.settings);
      return JOBS.prefill.tokens / (r.startedMs / 1000);
    });
    const greedy = await timed(JOBS.reps, () => run(JOBS.prompt, JOBS.greedy.settings));
    const widget = await timed(JOBS.reps, (i) => run(JOBS.prompt, { ...JOBS.widget.settings, seed: String(i + 1) }));
    await watched(p, () => window.held());
    const peak = rendererPeak(before);
    const { p2, readyCached } = await secondVisit(context, p, dtype);
    const copy = await p2.evaluate(() => window.copyBandwidth());
    const read = await p2.evaluate(() => window.readBandwidth());
    // On the threads the isolated page's pool has: the bound its decode reads under.
    const readThreads = threads > 1 ? await p2.evaluate((t) => window.readBandwidth(t), threads) : read;
    const decode = greedy.map((r) => (r.tokenMs.length - 1) / ((r.tokenMs.at(-1) - r.tokenMs[0]) / 1000));
    console.log(JSON.stringify({
      engine: 'botcard tab', model: label, dtype: held, threads, build, chromium: version,
      ready_cold_s: readyCold, ready_cached_s: readyCached,
      prefill_tok_s: median(prefill), ttft_ms: median(greedy.map((r) => r.tokenMs[0])),
      decode_tok_s: median(decode), widget_job_s: median(widget.map((r) => r.totalMs / 1000)),
      widget_sequences: widget[0].sequences, peak_memory_bytes: peak, weight_bytes: weightBytes, copy_gb_s: copy, read_gb_s: read, read_threads_gb_s: readThreads,
    }));
    await context.close();
  }
  // What a visit downloads besides models: the page's files (not models/, not the embed page
  // and its script) and one of the builds.
  const www = resolve(new URL('../../www', import.meta.url).pathname);
  const walk = (d) => readdirSync(d).flatMap((n) => (statSync(join(d, n)).isDirectory() ? walk(join(d, n)) : [join(d, n)]));
  const all = walk(www).filter((f) => !relative(www, f).startsWith('models') && !/embed\.(html|js)$/.test(f));
  const gz = (f) => gzipSync(readFileSync(f), { level: 9 }).length;
  const BUILDS = ['pkg', 'pkg-relaxed', 'pkg-threads'];
  // pkg-train/ is fetched only to train or download a bot, never on a visit.
  const NOT_ON_A_VISIT = ['pkg-train'];
  for (const build of readyOnly ? [] : BUILDS) {
    const files = all.filter((f) => ![...BUILDS, ...NOT_ON_A_VISIT].some((o) => o !== build && relative(www, f).startsWith(`${o}/`)));
    console.log(JSON.stringify({
      kind: 'page_bytes', build, files: files.length, gzip_bytes: files.reduce((n, f) => n + gz(f), 0),
      wasm_gzip_bytes: files.filter((f) => f.endsWith('.wasm')).reduce((n, f) => n + gz(f), 0),
    }));
  }
} finally {
  await b.close();
  await site.close();
  await hub.close();
}
