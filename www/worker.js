// The Web Worker that owns the WebAssembly module and the models; the only importer of pkg/.
// It serves every widget of a page: each request names its widget, each distinct model is
// loaded once and shared by the widgets that show it, and Stop stops one widget's generation.
// In:  {type: 'info', id} | {type: 'card', id, bytes, keep?} | {type: 'posts', id, file} (a person's X archive or posts)
//      {type: 'train', id, widget, file, base, baseName, steps?} (a bot from those posts, fine-tuning
//      the model at base) | {type: 'zip', id, handle, files} (a bot's folder as a zip)
//      {type: 'load', id, widget, base | files: {name: File}, dtype?, params}
//      {type: 'generate', id, widget, prompt, params} | {type: 'stop' | 'release', widget}
//      ('stop' ends the widget's generation, or its wait for a model that is loading; a 'load'
//      ends its wait for another model)
// Out: {type: 'info' | 'card' | 'posts' | 'zip' | 'preparing' | 'plan' | 'step' | 'finishing' | 'trained' | 'progress' | 'loaded' | 'started' | 'tokens' | 'done' | 'error', id, ...}
//      and, after a 'loaded' with holding: true, {type: 'held', id, ok, message?} once the model
//      is cached (or could not be: `message` says so to the person).
//      A 'loaded' with notStored (a sentence) is a model that could not be cached as it came.
// Three builds of the same library, which write the same text for the same seed: pkg-threads/
// splits each matrix product over Web Workers on shared memory, which browsers allow only in a
// cross-origin isolated page (the service worker makes the page one from its second visit);
// pkg-relaxed/ and pkg/ run on this worker's thread, with and without WebAssembly relaxed-simd's
// integer dot product (which pkg-threads/ uses too). The first that starts here is used.
// A fourth, pkg-train/, reads a person's posts and trains bots (trainLib).
const CORES = (navigator.hardwareConcurrency || 1) > 1;
// A module of one function using i8x16.relaxed_swizzle validates only where relaxed-simd runs.
const RELAXED = WebAssembly.validate(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0,
  1, 123, 3, 2, 1, 0, 10, 15, 1, 13, 0, 65, 1, 253, 15, 65, 2, 253, 15, 253, 128, 2, 11]));
/** The builds in the order they are tried; `usable(isolated)`: whether one may start here on a
 * page that is (or is not) cross-origin isolated. */
const BUILDS = [
  { dir: 'pkg-threads', usable: (isolated) => isolated && CORES && RELAXED, threads: true },
  { dir: 'pkg-relaxed', usable: () => RELAXED },
  { dir: 'pkg', usable: () => true },
];
/** The build a cross-origin isolated page (a visit the service worker serves) runs here. */
const ISOLATED_BUILD = BUILDS.find((b) => b.usable(true)).dir;

/** Threads the page is told generations run on (info): the threaded build's pool size, which
 * its pool has once started (startThreads); 1 otherwise, or where its Workers did not start.
 * A finished generation reports the library's own count (threadsInUse). */
let threadCount = 1;
/** The build that runs. */
let buildName;
/** Starts the threaded build's pool of Web Workers, once; resolves when the library may use it
 * (it runs everything on this thread until then). The pool is started only after the page's
 * first model is ready, or at a first generation: its Workers' start-up (each starts the build
 * again) took CPU time that a cached model's load needs, on a machine of few cores. */
let startThreads = () => Promise.resolve();

/** The URL of a WebAssembly build's JS. The service worker serves this worker and its page from
 * one build (www/sw.js). The threaded build's helper workers start from blob: URLs, so it knows
 * them only by the URL they import the build's JS from: that URL names the build. (No
 * version.js: served without the service worker's builds.) */
async function buildUrl(dir) {
  const id = await buildId;
  return `./${dir}/${GLUE}${id ? `?build=${id}` : ''}`;
}
/** This build's id (undefined where there is no version.js). */
const buildId = import('./version.js').then(() => self.BOTCARD_BUILD?.id, () => undefined);
/** The files wasm-bindgen writes in each build's folder (./build.sh): the JS, and the
 * WebAssembly it would fetch itself. */
const GLUE = 'botcard.js';
const WASM = 'botcard_bg.wasm';

/** The library's exports, once its WebAssembly runs (its thread pool starts later: startThreads). */
const ready = (async () => {
  const builds = BUILDS.filter((b) => b.usable(self.crossOriginIsolated));
  // The first build's WebAssembly is asked for, and compiled as it arrives, at once, not after
  // its JS, which waits for the build's id: a first visit's largest download starts two round
  // trips to the host sooner (version.js, then the JS), and a cached visit's compile runs while
  // those two are read. The service worker serves it from the build it pinned this worker to.
  // A host that sends it under another type, or an error, gets the JS's own handling of the
  // response (its fallback to reading the bytes whole; its error).
  const first = fetch(`./${builds[0].dir}/${WASM}`).then((res) => (
    res.ok && res.headers.get('content-type') === 'application/wasm' ? WebAssembly.compileStreaming(res) : res));
  first.catch(() => {});
  for (const build of builds) {
    try {
      const lib = await import(await buildUrl(build.dir));
      await lib.default(build === builds[0] ? { module_or_path: first } : undefined);
      if (build.threads) {
        threadCount = navigator.hardwareConcurrency;
        let started = null;
        startThreads = () => (started ??= lib.initThreadPool(threadCount).then(() => lib.threadPoolStarted(), (e) => {
          // The build runs on, on this thread alone.
          console.warn('botcard: the threaded build\'s Web Workers did not start; running on one thread.', e);
          threadCount = 1;
        }));
      }
      buildName = build.dir;
      return lib;
    } catch (e) {
      // A response handed on unread is not wanted (unread, the download would stay open).
      if (build === builds[0]) first.then((got) => got instanceof Response && got.body?.cancel()).catch(() => {});
      if (build.dir === 'pkg') throw e;
      console.warn(`botcard: the ${build.dir} build did not start; trying the next.`, e);
    }
  }
})();
const CACHE = 'botcard-models-v1';
// What was cached of each model file: its length and checksum (the library's loader makes it,
// and checks a file against it), written once the file is whole in CACHE and checked when the
// file is read back. A cached file without one (cut off while stored, or cached before records
// were kept) is not used; one that reads back otherwise is dropped and downloaded again.
const RECORDS = 'botcard-records-v1';
// A hub model quantized here at load is cached as it is held (a GGUF of its q8_0 weights, under
// the name the library asks for first), in place of its checkpoint: a second visit reads a third
// of the bytes and quantizes nothing. This header marks such an entry; a page asking for a dtype
// that keeps the checkpoint's numbers (f32; the library's cachesHeld says which) passes it by and
// downloads (and caches) the checkpoint itself.
const HELD = 'x-botcard-held';
// Marks a cached verdict that a file cannot be read (a hub answering without CORS headers),
// holding the sentence: offline, such a file is passed over as it was online.
const UNREADABLE = 'x-botcard-unreadable';
// One file larger than this is refused: wasm32 has 4 GB of memory in all, a file read whole (all
// but the weights, which are streamed) is in memory twice while it loads, and the weights of a
// larger checkpoint would not fit as f32.
const MAX_FILE_BYTES = 1.5e9;
// A file streamed to the library waits for a timer turn after each this many bytes. Chromium
// frees the buffers a response body passes through only a while after they are read; read flat
// out, a 500 MB checkpoint left up to 300 MB of them on top of the model (the tab's peak moved
// between 372 and 513 MB from one cold load of a GPT-2 124M to the next). Pausing every 16 MB
// (about 30 waits of a few ms: 2% of that load) keeps the peak at 371-391 MB
// (`node tests/bench/browser.mjs MODEL q8_0:1 label ready`, A/B in one session).
const PAUSE_EVERY_BYTES = 16 << 20;
// Bytes of a download waiting to be stored in the cache, past which the download waits (cacheCopy).
const COPY_BACKLOG_BYTES = 8 << 20;
// In-memory weights the worker keeps for all models together; past it, models no widget is
// using right now are dropped (least recently used first) and reloaded, from the Cache API,
// when their widget computes again. Two GPT-2 124M in f32 (498 MB each) fit, or eight in q8_0.
const MAX_RESIDENT_BYTES = 1.2e9;

// Cards this build has parsed, as JSON, by their bytes' SHA-256: a card seen before (each
// visit to a bot's page) is drawn without parsing it again, and before the WebAssembly runs.
// Only cards the page asks to keep are kept (a hub's; not a bot made here from a person's
// posts, which must be gone from the browser once its maker deletes it).
// The parse (YAML, Markdown, HTML and its sanitizer: code nothing else on a visit runs) took
// 20-30 ms of this worker ahead of a cached model's load. Keys name the build that parsed them:
// another build's parse of a card is not used (the rules may have changed), and is dropped
// when this build keeps one.
const CARDS = 'botcard-cards-v1';

/** key -> {bot, weightBytes, widgets: Set, lastUsed, busy} for each model in memory. */
const models = new Map();
/** key -> {promise, controller, stops: Map widget -> its Stop} while a model loads. */
const loading = new Map();
/** widget -> {key, source, stopped} */
const widgets = new Map();
let localLoads = 0;

const post = (msg, transfer) => self.postMessage(msg, transfer || []);

// Yields to the event loop so 'stop' and other widgets' steps get through between tokens
// (a MessageChannel is faster than setTimeout). Several generations may wait at once.
const channel = new MessageChannel();
const waiting = [];
channel.port1.onmessage = () => waiting.shift()?.();
const yieldNow = () => new Promise((resolve) => { waiting.push(resolve); channel.port2.postMessage(0); });

const ABSENT = Symbol('absent');
/** url -> the promise of its cache write, while the Cache API stores a download as it comes. */
const storing = new Map();
/** A file the source may have but that could not be read; `why` is the sentence. */
class Unreadable {
  constructor(why) { this.why = why; }
}
/** Thrown where Stop ended a load. */
const STOPPED = 'Stopped loading. Press Compute to load the model again.';

/** What the widget says when a model could not be cached (`e`: what Cache.put threw). */
function notKept(e) {
  return e?.name === 'QuotaExceededError'
    ? 'This model is not kept for offline use: this browser\'s storage for the site is full. It runs, and is downloaded again next time.'
    : `This model is not kept for offline use (${e?.message || e}). It runs, and is downloaded again next time.`;
}

/** Caches CACHE and RECORDS, or nulls where there is no Cache API (e.g. an opaque origin). */
async function openCaches() {
  try { return [await caches.open(CACHE), await caches.open(RECORDS)]; } catch { return [null, null]; }
}

/** The cache's copy of a body being downloaded, as a stream to store (`stream`): `write(piece)`
 * queues a copy of each piece and waits while more than COPY_BACKLOG_BYTES wait to be stored,
 * until the cache takes more or gives up (it cancels the stream, or its put fails: `drop()`).
 * Chromium stores a file more slowly than the library reads it (about 110 MB/s here), and a
 * branch of the body (`tee`, `clone`) queues what the slower side has not taken yet: a GPT-2
 * 124M's f32 checkpoint then held up to 500 MB more in the tab. */
function cacheCopy() {
  let controller;
  let wake = null;
  let wanted = true;
  const woken = () => { wake?.(); wake = null; };
  // The cache gave up: the download goes on for the library alone.
  const drop = () => { wanted = false; woken(); };
  const stream = new ReadableStream({
    start(c) { controller = c; },
    pull: woken,
    cancel: drop,
  }, new ByteLengthQueuingStrategy({ highWaterMark: COPY_BACKLOG_BYTES }));
  return {
    stream,
    drop,
    async write(piece) {
      if (!wanted) return;
      controller.enqueue(piece.slice());
      if (controller.desiredSize <= 0) await new Promise((r) => { wake = r; });
    },
    close() { if (wanted) controller.close(); },
    error(e) { if (wanted) controller.error(e); },
  };
}

/** Reads a response's body with progress: to `sink` piece by piece (returns the byte count), or
 * whole (returns the bytes), and to `copy` (a cacheCopy) if given. `signal` aborts it. */
async function consume(body, total, name, id, sink, signal, copy = null) {
  try {
    const got = await consumed(body, total, name, id, sink, signal, copy);
    copy?.close();
    return got;
  } catch (e) {
    copy?.error(e);
    throw e;
  }
}

/** consume's reading, without closing or failing `copy`. */
async function consumed(body, total, name, id, sink, signal, copy) {
  // To a sink, the pieces go through one reused 1 MB buffer (a byte stream's BYOB reader), so
  // our reads make no garbage of their own; the browser's own buffers are let go by pausing
  // (PAUSE_EVERY_BYTES).
  // An empty file read back from the Cache API has no body at all.
  body ??= new Blob([]).stream();
  let reader;
  let buffer = null;
  if (sink) {
    try { reader = body.getReader({ mode: 'byob' }); buffer = new ArrayBuffer(1 << 20); } catch { /* not a byte stream */ }
  }
  reader ??= body.getReader();
  // A streamed file is announced before its first bytes: an empty one has none, and the library
  // must still hear of it to say what is wrong with it.
  if (sink) sink(new Uint8Array(0));
  const chunks = [];
  let loaded = 0;
  for (;;) {
    let piece;
    try {
      signal?.throwIfAborted();
      piece = buffer ? await reader.read(new Uint8Array(buffer)) : await reader.read();
    } catch (e) {
      reader.cancel().catch(() => {});
      if (signal?.aborted) throw new Error(STOPPED);
      // A body ends in an error when the connection drops or the server sends less than its
      // Content-Length said.
      throw new Error(`Could not download ${name}: the download broke off after ${(loaded / 1e6).toFixed(1)} MB.`, { cause: e });
    }
    const { done, value } = piece;
    if (done) break;
    if (buffer) buffer = value.buffer;
    loaded += value.length;
    if (loaded > MAX_FILE_BYTES) { reader.cancel().catch(() => {}); throw new Error(`${name} is too big to run in a browser tab.`); }
    if (sink) sink(value); else chunks.push(value);
    if (copy) await copy.write(value);
    post({ type: 'progress', id, file: name, loaded, total });
    if (sink && loaded % PAUSE_EVERY_BYTES < value.length) await new Promise((r) => setTimeout(r, 0));
  }
  if (sink) return loaded;
  const bytes = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) { bytes.set(c, at); at += c.length; }
  return bytes;
}

/** Whether `url`'s server answers at all: a request the browser may make but not show (no-cors)
 * succeeds where one that needs CORS headers fails for their absence alone. */
async function answers(url, signal) {
  const probe = new AbortController();
  signal?.addEventListener('abort', () => probe.abort(), { once: true });
  try {
    await fetch(url, { mode: 'no-cors', signal: probe.signal });
    return true;
  } catch {
    return false;
  } finally {
    probe.abort(); // the body is not wanted
  }
}

/** Downloads `url`, or reads it from the cache; notes in `reads` which files came from the
 * cache (name -> their record) and which are being stored (name -> the promise of the write:
 * null once stored, else what it threw). */
async function download(url, name, id, sink, dtype, signal, reads) {
  const lib = await ready;
  const [cache, records] = await openCaches();
  const cached = cache && await cache.match(url);
  if (cached?.headers.get(UNREADABLE)) return new Unreadable(cached.headers.get(UNREADABLE));
  if (cached?.status === 404) return ABSENT;
  if (cached?.headers.get(HELD) && !lib.cachesHeld(dtype)) return ABSENT;
  if (cached) {
    const record = await records.match(url);
    if (record) {
      reads.cached.set(name, await record.text());
      return consume(cached.body, Number(cached.headers.get('content-length')) || 0, name, id, sink, signal);
    }
    cached.body?.cancel().catch(() => {});
    await cache.delete(url);
  }
  let res;
  try {
    res = await fetch(url, { signal });
  } catch {
    if (signal.aborted) throw new Error(STOPPED);
    // fetch fails alike when the hub cannot be reached and when it answers without CORS
    // headers (static hosts and mirrors often do for a missing file): other choices of the
    // file's part are then tried, and a required part with none left says this.
    if (await answers(url, signal)) {
      const why = `Could not download ${name}: the hub answered without the CORS header (Access-Control-Allow-Origin) that lets web pages read it.`;
      if (cache) await cache.put(url, new Response(null, { status: 404, headers: { [UNREADABLE]: why } })).catch(() => {});
      return new Unreadable(why);
    }
    if (signal.aborted) throw new Error(STOPPED);
    throw new Error(`Could not download ${name}: you seem to be offline or the hub cannot be reached.`);
  }
  if (res.status === 404) {
    // Remembered, so that offline the optional files a model lacks (generation_config.json)
    // are known to be absent instead of unreachable.
    if (cache) await cache.put(url, new Response(null, { status: 404 })).catch(() => {});
    return ABSENT;
  }
  if (!res.ok) {
    res.body?.cancel().catch(() => {});
    return new Unreadable(`Could not download ${name} (HTTP ${res.status}).`);
  }
  const total = Number(res.headers.get('content-length')) || 0;
  if (total > MAX_FILE_BYTES) throw new Error(`${name} is ${(total / 1e9).toFixed(1)} GB, too big to run in a browser tab.`);
  // The cache stores its own copy of the body as it arrives; a download that fails stores
  // nothing. A checkpoint that will be cached as held once loaded is not stored as it came.
  const heldLater = lib.isWeights(name) && name !== lib.heldFile() && lib.cachesHeld(dtype);
  let copy = null;
  if (cache && !heldLater) {
    copy = cacheCopy();
    const stored = new Response(copy.stream, { status: res.status, statusText: res.statusText, headers: res.headers });
    const put = cache.put(url, stored).then(() => null, (e) => { copy.drop(); return e; });
    storing.set(url, put);
    put.finally(() => storing.delete(url));
    reads.stored.set(name, put);
  }
  return consume(res.body, total, name, id, sink, signal, copy);
}

/** A file of `source` (hub base URL or picked File objects), whole or to `sink`; ABSENT if the
 * source does not have it, Unreadable if it could not be read. */
async function read(source, name, id, sink, signal, reads) {
  if (source.base) return download(source.base + name, name, id, sink, source.dtype, signal, reads);
  const f = source.files[name];
  if (!f) return ABSENT;
  return consume(f.stream(), f.size, name, id, sink, signal);
}

/** `call()`, with what it throws marked as the library refusing a file's bytes (not a failed
 * download). */
function refusing(call) {
  try { return call(); } catch (e) { throw Object.assign(e, { refused: true }); }
}

/** Feeds `loader` the model's files in the order and formats the library asks for; the weights
 * go in pieces as they arrive, unless `whole` is given: then every file goes whole, and is also
 * kept there by name. The files the library asks for whatever the source holds
 * (readAheadFiles), and the rest of a set of files once it asks for one (readAlongFiles:
 * merges.txt with vocab.json), are read at once, side by side, not a round trip after another. Fills
 * `known` (what the library asks: true for read, false for absent, or the sentence saying why a
 * file could not be read), `asked` (every name asked for, in order) and `reads` (see
 * download), and returns the bytes read. */
async function collect(source, id, loader, signal, known, asked, reads, whole = null) {
  const { nextModelFile, isStreamed, readAheadFiles, readAlongFiles } = await ready;
  const ahead = new Map();
  const readAhead = (names) => {
    for (const name of names) {
      if (ahead.has(name) || asked.includes(name)) continue;
      const got = read(source, name, id, null, signal, reads);
      got.catch(() => {}); // its failure is seen when the library asks for it (if it still does)
      ahead.set(name, got);
    }
  };
  readAhead(readAheadFiles());
  // A file read from the cache: its record goes to the loader before its bytes (checkCached).
  const told = new Set();
  const tell = (name) => {
    if (told.has(name) || !reads.cached.has(name)) return;
    told.add(name);
    loader.expect(name, reads.cached.get(name));
  };
  let bytes = 0;
  for (let name; (name = nextModelFile(known)) !== undefined;) {
    asked.push(name);
    readAhead(readAlongFiles(name));
    const sink = isStreamed(name) && !whole ? (piece) => { tell(name); return refusing(() => loader.push(name, piece)); } : null;
    const got = await ((!sink && ahead.get(name)) || read(source, name, id, sink, signal, reads));
    known[name] = got === ABSENT ? false : got instanceof Unreadable ? got.why : true;
    if (got === ABSENT || got instanceof Unreadable) continue;
    if (sink) bytes += got;
    else {
      bytes += got.length;
      tell(name);
      refusing(() => loader.add(name, got));
      if (whole) whole[name] = got;
    }
  }
  return bytes;
}

/** Reads the model of `source` into a WasmLoader of its dtype, file by file as the library asks
 * (collect; with `whole`, every file whole, returned by name as `files`), checks the files that
 * came from the cache against their records, makes of the loader what `make(loader)` returns
 * (`made`), and records the files the cache stored (`notStored`, see recordStored). A cached file
 * that reads back damaged, or that the library refuses, is dropped with the rest of the model's
 * cached files, and the model is read again, downloading them, once. A load that fails for good
 * stops what `controller` still downloads and drops from the cache any file the library refused.
 * Returns {known, bytes, files, made, notStored}. */
async function readModel(source, id, controller, { whole = false, make = () => null } = {}) {
  const { WasmLoader } = await ready;
  for (let attempt = 1; ; attempt++) {
    const asked = [];
    const reads = { cached: new Map(), stored: new Map() };
    const loader = new WasmLoader(source.dtype);
    try {
      const known = {};
      const files = whole ? {} : null;
      const bytes = await collect(source, id, loader, controller.signal, known, asked, reads, files);
      checkCached(loader);
      const made = refusing(() => make(loader));
      const notStored = source.base ? await recordStored(source.base, loader, reads) : null;
      return { known, bytes, files, made, notStored };
    } catch (e) {
      const damaged = e instanceof CorruptCache || (e.refused && reads.cached.size > 0);
      if (damaged && attempt === 1 && !controller.signal.aborted) {
        console.warn('botcard: a cached model file is damaged; downloading the model again.', e);
        await forget(source.base, asked);
        continue;
      }
      controller.abort(); // what is still downloading is not wanted
      if (e.refused && source.base) await forget(source.base, asked);
      throw e;
    } finally {
      loader.free();
    }
  }
}

/** The files of the model at `base` (its checkpoint, not weights held quantized), whole: what
 * a bot is trained from. Read, cached and checked as a widget's model is (readModel). */
async function folderFiles(base, id) {
  return (await readModel({ base, dtype: 'f32' }, id, new AbortController(), { whole: true })).files;
}

/** widget -> {stopped} for each training in progress. */
const trainings = new Map();

let trainBuild = null;
/** The exports of pkg-train/, the build that reads a person's posts, trains bots and zips their
 * folders, loaded the first time it is needed (every visit would otherwise download it). */
function trainLib() {
  trainBuild ??= (async () => {
    const lib = await import(await buildUrl('pkg-train'));
    await lib.default();
    return lib;
  })();
  trainBuild.catch(() => { trainBuild = null; });
  return trainBuild;
}

/** Trains a bot on the posts of `msg.file` from the model at `msg.base`, posting its plan, each
 * step, and the bot's files; Stop (for `msg.widget`) ends it between two steps. */
async function train(msg) {
  const { id, widget } = msg;
  const job = { stopped: false };
  trainings.set(widget, job);
  let training = null;
  try {
    const lib = await trainLib();
    const posts = lib.WasmPosts.read(msg.file, msg.file.name);
    try {
      const files = await folderFiles(msg.base, id);
      post({ type: 'preparing', id });
      await yieldNow();
      if (job.stopped) return post({ type: 'trained', id, stopped: true });
      training = new lib.WasmTraining(posts, msg.baseName, files, msg.steps ?? undefined);
    } finally {
      posts.free();
    }
    post({ type: 'plan', id, plan: training.plan() });
    const t0 = performance.now();
    const seconds = () => (performance.now() - t0) / 1000;
    while (!training.isDone()) {
      await yieldNow();
      if (job.stopped) return post({ type: 'trained', id, stopped: true });
      post({ type: 'step', id, step: training.step(), seconds: seconds() });
    }
    post({ type: 'finishing', id });
    await yieldNow();
    const bot = training.finish(seconds());
    try {
      const files = Object.fromEntries(bot.names().map((n) => [n, bot.file(n)]));
      post({ type: 'trained', id, handle: bot.handle, files, figures: bot.figures() }, Object.values(files).map((b) => b.buffer));
    } finally {
      bot.free();
    }
  } finally {
    training?.free();
    trainings.delete(widget);
  }
}

/** Drops the cached copies of the files `names` of `base`: after the library refused one, the
 * next try downloads them again instead of failing on the same bytes. */
async function forget(base, names) {
  const [cache, records] = await openCaches();
  if (!cache) return;
  await Promise.all(names.map(async (n) => {
    await storing.get(base + n);
    await records.delete(base + n);
    await cache.delete(base + n);
  }));
}

/** Thrown where a cached file read back otherwise than it was stored. */
class CorruptCache extends Error {}

/** Checks the files read from the cache against their records (before the bot is made of them):
 * the loader, told each record before the file's bytes (collect), says which do not match. */
function checkCached(loader) {
  const [name] = loader.damaged();
  if (name) throw new CorruptCache(`The cached ${name} is damaged.`);
}

/** Records the files stored while downloading, once each is whole in the cache; the sentence
 * for the widget if one could not be stored, else null. */
async function recordStored(base, loader, reads) {
  const [, records] = await openCaches();
  let why = null;
  for (const [name, put] of reads.stored) {
    const failed = await put;
    if (failed) why ??= notKept(failed);
    else await records.put(base + name, new Response(loader.checksum(name))).catch((e) => { why ??= notKept(e); });
  }
  return why;
}

/** Caches `bot`'s weights as held under `base` (see HELD). The file is made a piece at a time
 * (its header, then a tensor's rows at a time), so it is never in memory whole; where the origin
 * private file system is there, the pieces go from wasm memory to a scratch file there and the
 * cache stores that file, so not one of the file's bytes becomes JS garbage (which otherwise the
 * tab holds until its next garbage collection, on top of the model). */
async function cacheHeld(base, bot) {
  const lib = await ready;
  const [cache, records] = await openCaches();
  const file = bot.heldWeights();
  const headers = { 'content-length': String(file.size), [HELD]: bot.heldAs };
  let scratch = null;
  try {
    scratch = await scratchFile((access) => { for (let v; (v = file.next(bot));) access.write(v); });
    const body = scratch?.file ?? new ReadableStream({
      pull(controller) {
        const piece = file.next(bot);
        if (piece) controller.enqueue(piece.slice()); else controller.close();
      },
    });
    const url = base + lib.heldFile();
    await cache.put(url, new Response(body, { headers }));
    await records.put(url, new Response(file.checksum()));
  } finally {
    file.free();
    await scratch?.remove();
  }
}

/** Scratch files' names in the origin private file system start so, then the time they were
 * made; the worker removes old ones on starting (a tab closed while caching leaves one behind). */
const SCRATCH = 'botcard-scratch-';
let scratches = 0;

/** A scratch file filled by `write(syncAccessHandle)`: {file: File (disk-backed), remove()}, or
 * null where the origin private file system or its synchronous handles are not to be had. */
async function scratchFile(write) {
  let dir, handle, access;
  const name = `${SCRATCH}${Date.now()}-${scratches++}`;
  try {
    dir = await navigator.storage.getDirectory();
    handle = await dir.getFileHandle(name, { create: true });
    access = await handle.createSyncAccessHandle();
  } catch {
    if (handle) await dir.removeEntry(name).catch(() => {});
    return null;
  }
  const remove = () => dir.removeEntry(name).catch(() => {});
  try {
    write(access);
    access.flush();
  } catch (e) {
    access.close();
    await remove();
    throw e;
  }
  access.close();
  return { file: await handle.getFile(), remove };
}

/** Removes scratch files a closed tab left behind: those over an hour old (a younger one may be
 * another tab's, being cached right now). */
async function removeScratches() {
  try {
    const dir = await navigator.storage.getDirectory();
    for await (const name of dir.keys()) {
      const made = Number(name.startsWith(SCRATCH) && name.slice(SCRATCH.length).split('-')[0]);
      if (made && Date.now() - made > 3600e3) await dir.removeEntry(name).catch(() => {});
    }
  } catch { /* no such storage */ }
}
removeScratches();

const residentBytes = () => [...models.values()].reduce((n, m) => n + m.weightBytes, 0);

/** The card of `bytes` (an ArrayBuffer) as the library parses it; with `keep`, from CARDS when
 * this build has parsed it before, else kept there. Where there is no Cache API, no build id or
 * no SubtleCrypto (a page neither https nor localhost), every card is parsed. */
async function parsedCard(bytes, keep) {
  let cache = null;
  let key = null;
  try {
    const build = await buildId;
    if (keep && build && self.crypto?.subtle) {
      const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
      key = new URL(`card/${build}/${Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('')}`, self.location).href;
      cache = await caches.open(CARDS);
      const hit = await cache.match(key);
      if (hit) return await hit.json();
    }
  } catch { cache = null; /* parsed below */ }
  const card = (await ready).parseCard(new Uint8Array(bytes));
  if (cache) keepCard(cache, key, card);
  return card;
}

/** Keeps `card` under `key` in `cache`, dropping the cards other builds parsed. */
async function keepCard(cache, key, card) {
  try {
    await cache.put(key, Response.json(card));
    const ours = key.slice(0, key.lastIndexOf('/') + 1);
    for (const k of await cache.keys()) if (!k.url.startsWith(ours)) await cache.delete(k);
  } catch { /* the next visit parses it again */ }
}

/** Drops models until `room` more bytes fit, least recently used first, never a busy one. */
function makeRoom(room) {
  const idle = [...models.entries()].filter(([, m]) => !m.busy).sort((a, b) => a[1].lastUsed - b[1].lastUsed);
  for (const [key, m] of idle) {
    if (residentBytes() + room <= MAX_RESIDENT_BYTES) break;
    m.bot.free();
    models.delete(key);
  }
}

/** The model of `source` in memory, loading it (once, however many widgets ask) if needed.
 * Stop from `widget` ends its wait, and the load itself once no widget waits for it. */
async function model(key, source, id, widget) {
  const have = models.get(key);
  if (have) return { entry: have, cached: true };
  let job = loading.get(key);
  if (!job) {
    const controller = new AbortController();
    job = { controller, stops: new Map() };
    job.promise = (async () => {
      const t0 = performance.now();
      const { heldFile, cachesHeld } = await ready;
      const { known, bytes, made: bot, notStored } = await readModel(source, id, controller, { make: (loader) => loader.finish() });
      const holding = Boolean(source.base && cachesHeld(source.dtype) && known[heldFile()] !== true);
      if (holding) {
        // After the model is announced ready (the write takes a moment, once per model); 'held'
        // says when it is done (a tab closed before then keeps no copy of the model).
        setTimeout(() => cacheHeld(source.base, bot).then(
          () => post({ type: 'held', id, ok: true }),
          (e) => { console.warn('botcard: the model could not be cached.', e); post({ type: 'held', id, ok: false, message: notKept(e) }); },
        ), 0);
      }
      makeRoom(bot.weightBytes);
      const entry = { bot, weightBytes: bot.weightBytes, heldAs: bot.heldAs, holding, notStored, widgets: new Set(), lastUsed: 0, busy: 0, bytes, seconds: (performance.now() - t0) / 1000 };
      models.set(key, entry);
      return entry;
    })().finally(() => loading.delete(key));
    loading.set(key, job);
  }
  const stopped = new Promise((_, reject) => job.stops.set(widget, () => reject(new Error(STOPPED))));
  try {
    return { entry: await Promise.race([job.promise, stopped]), cached: false };
  } finally {
    job.stops.delete(widget);
  }
}

/** Stop from `widget` for the loads it waits for (but the load of `keep`). */
function stopLoading(widget, keep = null) {
  for (const [key, job] of loading) {
    if (key === keep) continue;
    const stop = job.stops.get(widget);
    if (!stop) continue;
    stop();
    job.stops.delete(widget);
    if (job.stops.size === 0) job.controller.abort();
  }
}

/** Frees the model of `key` once no widget holds it and no generation runs on it. */
function freeIfUnused(key) {
  const m = models.get(key);
  if (m && m.widgets.size === 0 && !m.busy) { m.bot.free(); models.delete(key); }
}

/** Forgets `widget`'s hold on its model. */
function release(widget) {
  const w = widgets.get(widget);
  if (!w) return;
  w.stopped = true;
  widgets.delete(widget);
  models.get(w.key)?.widgets.delete(widget);
  freeIfUnused(w.key);
}

async function handle(msg) {
  const { type, id, widget } = msg;
  if (type === 'card') {
    post({ type: 'card', id, card: await parsedCard(msg.bytes, msg.keep) });
    return;
  }
  const lib = await ready;
  if (type === 'info') {
    post({ type: 'info', id, prompt: lib.samplePrompt(), threads: threadCount, build: buildName, isolatedBuild: ISOLATED_BUILD });
  } else if (type === 'train') {
    await train(msg);
  } else if (type === 'zip') {
    const { zipFolder, folderName } = await trainLib();
    const zip = zipFolder(msg.handle, msg.files);
    post({ type: 'zip', id, zip, file: `${folderName(msg.handle)}.zip` }, [zip.buffer]);
  } else if (type === 'posts') {
    // Read here, a slice at a time, straight from the person's File (FileReaderSync).
    const posts = (await trainLib()).WasmPosts.read(msg.file, msg.file.name);
    try {
      const bytes = posts.avatar();
      const avatar = bytes && { bytes, type: posts.avatarType() };
      post({ type: 'posts', id, card: posts.card(), problem: posts.problem(), avatar }, bytes ? [bytes.buffer] : []);
    } finally {
      posts.free();
    }
  } else if (type === 'load') {
    const source = msg.files ? { files: msg.files, dtype: msg.dtype } : { base: msg.base, dtype: msg.dtype };
    const key = msg.files ? `local:${++localLoads}` : `${msg.base}#${msg.dtype ?? ''}`;
    // A widget shows one model: the download of one it asked for before is not wanted by it now.
    stopLoading(widget, key);
    const { entry, cached } = await model(key, source, id, widget);
    if (widgets.get(widget)?.key !== key) release(widget);
    widgets.set(widget, { key, source, stopped: false });
    entry.widgets.add(widget);
    post({ type: 'loaded', id, settings: entry.bot.settings(msg.params || {}), bytes: entry.bytes, weightBytes: entry.weightBytes, heldAs: entry.heldAs, holding: !cached && entry.holding, notStored: entry.notStored, seconds: entry.seconds, cached });
    startThreads();
  } else if (type === 'generate') {
    const w = widgets.get(widget);
    if (!w) throw new Error('No model is loaded.');
    w.stopped = false;
    await startThreads();
    const { entry } = await model(w.key, w.source, id, widget);
    entry.widgets.add(widget);
    entry.busy++;
    entry.lastUsed = performance.now();
    try {
      const session = entry.bot.start(msg.prompt, msg.params || {});
      try {
        post({ type: 'started', id, sequences: session.sequenceCount, seed: session.seed });
        const t0 = performance.now();
        let tokens = 0;
        while (!session.isDone() && !w.stopped) {
          const step = session.step(entry.bot);
          tokens += step.length;
          post({ type: 'tokens', id, tokens: step });
          await yieldNow();
        }
        const seconds = (performance.now() - t0) / 1000;
        post({ type: 'done', id, sequences: session.sequences(), tokens, seconds, stopped: w.stopped, seed: session.seed, threads: lib.threadsInUse() });
      } finally {
        session.free();
      }
    } finally {
      entry.busy--;
      entry.lastUsed = performance.now();
      freeIfUnused(w.key);
    }
  }
}

// Every message is handled as it comes; generations of different widgets interleave token by
// token. 'stop' and 'release' act at once, between two tokens of a running generation.
self.onmessage = ({ data }) => {
  if (data.type === 'stop') {
    const w = widgets.get(data.widget);
    if (w) w.stopped = true;
    const t = trainings.get(data.widget);
    if (t) t.stopped = true;
    stopLoading(data.widget);
    return;
  }
  if (data.type === 'release') { ready.then(() => release(data.widget)); return; }
  handle(data).catch((e) => {
    post({ type: 'error', id: data.id, message: (e && e.message) || String(e) });
  });
};
