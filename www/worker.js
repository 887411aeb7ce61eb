// The Web Worker that owns the WebAssembly module and the model; the only importer of pkg/.
// In:  {type: 'card', id, bytes} | {type: 'load', id, base, files?} | {type: 'generate', id, prompt, params} | {type: 'stop'}
// Out: {type: 'card' | 'progress' | 'loaded' | 'started' | 'tokens' | 'done' | 'error', id, ...}
import init, { renderCard, WasmBot } from './pkg/botcard.js';

const ready = init();
const CACHE = 'botcard-models-v1';
// A tab has a few GB of wasm memory at most; the model is copied once more while loading.
const MAX_BYTES = 1.5e9;

let bot = null;
let loadedBase = null;
let stopped = false;

const post = (msg, transfer) => self.postMessage(msg, transfer || []);

// Yields to the event loop so a 'stop' message can arrive between tokens (faster than setTimeout).
const channel = new MessageChannel();
const yieldNow = () => new Promise((resolve) => { channel.port1.onmessage = resolve; channel.port2.postMessage(0); });

class MissingFile extends Error {}

async function download(url, name, id) {
  let cache = null;
  try { cache = await caches.open(CACHE); } catch { /* no Cache API (e.g. opaque origin) */ }
  const cached = cache && await cache.match(url);
  if (cached?.status === 404) throw new MissingFile(name);
  if (cached) return new Uint8Array(await cached.arrayBuffer());
  let res;
  try {
    res = await fetch(url);
  } catch {
    throw new Error(`Could not download ${name}: you seem to be offline or the hub cannot be reached.`);
  }
  if (res.status === 404) {
    // Remembered, so that offline the optional files a model lacks (generation_config.json)
    // are known to be absent instead of unreachable.
    if (cache) await cache.put(url, new Response(null, { status: 404 })).catch(() => {});
    throw new MissingFile(name);
  }
  if (!res.ok) throw new Error(`Could not download ${name} (HTTP ${res.status}).`);
  const total = Number(res.headers.get('content-length')) || 0;
  if (total > MAX_BYTES) throw new Error(`${name} is ${(total / 1e9).toFixed(1)} GB, too big to run in a browser tab.`);
  const reader = res.body.getReader();
  const chunks = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    if (loaded > MAX_BYTES) throw new Error(`${name} is too big to run in a browser tab.`);
    post({ type: 'progress', id, file: name, loaded, total });
  }
  const bytes = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) { bytes.set(c, at); at += c.length; }
  if (cache) await cache.put(url, new Response(bytes)).catch(() => {});
  return bytes;
}

// The files of a model, faster formats first: config.json; model.safetensors, else
// pytorch_model.bin; tokenizer.json, else vocab.json + merges.txt.
async function fetchModel(base, id) {
  const files = {};
  const get = async (name, optional = false) => {
    try {
      files[name] = await download(base + name, name, id);
      return true;
    } catch (e) {
      if (e instanceof MissingFile && optional) return false;
      if (e instanceof MissingFile) throw new Error(`The model has no ${name}.`);
      throw e;
    }
  };
  await get('config.json');
  await get('generation_config.json', true);
  if (!(await get('model.safetensors', true))) {
    if (!(await get('pytorch_model.bin', true))) throw new Error('The model has neither model.safetensors nor pytorch_model.bin.');
  }
  if (!(await get('tokenizer.json', true))) {
    await get('vocab.json');
    await get('merges.txt');
  }
  return files;
}

async function handle(msg) {
  const { type, id } = msg;
  await ready;
  if (type === 'card') {
    post({ type: 'card', id, card: renderCard(new Uint8Array(msg.bytes)) });
  } else if (type === 'load') {
    if (msg.base && msg.base === loadedBase && bot) { post({ type: 'loaded', id, defaults: bot.defaults(), cached: true }); return; }
    const t0 = performance.now();
    const files = msg.files ? Object.fromEntries(Object.entries(msg.files).map(([k, v]) => [k, new Uint8Array(v)])) : await fetchModel(msg.base, id);
    const bytes = Object.values(files).reduce((n, f) => n + f.length, 0);
    if (bot) { bot.free(); bot = null; loadedBase = null; }
    bot = new WasmBot(files);
    loadedBase = msg.files ? null : msg.base;
    post({ type: 'loaded', id, defaults: bot.defaults(), bytes, seconds: (performance.now() - t0) / 1000 });
  } else if (type === 'generate') {
    if (!bot) throw new Error('No model is loaded.');
    stopped = false;
    const n = bot.start(msg.prompt, msg.params || {});
    post({ type: 'started', id, sequences: n });
    const t0 = performance.now();
    let tokens = 0;
    while (!bot.isDone() && !stopped) {
      const step = bot.step();
      tokens += step.length;
      post({ type: 'tokens', id, tokens: step });
      await yieldNow();
    }
    const seconds = (performance.now() - t0) / 1000;
    post({ type: 'done', id, sequences: bot.sequences(), tokens, seconds, stopped });
    if (stopped) bot.stop();
  }
}

// Messages are handled one at a time, except 'stop', which must overtake a running generation.
let queue = Promise.resolve();
self.onmessage = ({ data }) => {
  if (data.type === 'stop') { stopped = true; return; }
  queue = queue.then(() => handle(data)).catch((e) => {
    post({ type: 'error', id: data.id, message: (e && e.message) || String(e) });
  });
};
