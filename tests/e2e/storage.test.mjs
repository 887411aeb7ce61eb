// The model cache when storage goes wrong: a cached model file cut short, altered, or stored
// without its record is found out and downloaded again (the text stays the model's); storage
// that is full leaves the model running uncached, and the widget says so.
import { test, before, after } from 'node:test';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { ROOT, browser, compute, mockHub, page, shot, staticServer, until } from './helpers.mjs';

let site, hub, b;
// The default bot's folder as a hub model: its checkpoint is larger than the backlog of a
// download waiting to be stored (COPY_BACKLOG_BYTES in www/worker.js).
const BIG = { repo: 'botcard/default', dir: 'www/models/default' };
before(async () => { site = await staticServer(); hub = await mockHub({ repos: { [BIG.repo]: BIG.dir } }); b = await browser(); });
after(async () => { await b?.close(); await site?.close(); await hub?.close(); });

const REPO = 'botcard/tiny-st';
const url = (dtype, repo = REPO) => `${site.url}/?model=${repo}&hub=${encodeURIComponent(hub.url)}&dtype=${dtype}&do_sample=false&max_new_tokens=12`;

const greedy = (p) => compute(p).then((r) => r.texts[0]);

/** The cached weights file of `repo` (not the note that the hub has no model.gguf) and its
 * record, once both are there: {url, size, record}. */
const cachedWeights = (p, repo = REPO) => until(p, async (repo) => {
  const cache = await caches.open('botcard-models-v1');
  let key;
  for (const k of await cache.keys()) {
    if (k.url.includes(repo) && /\/model\.(gguf|safetensors)$/.test(k.url) && (await cache.match(k)).ok) key = k;
  }
  const record = key && await (await caches.open('botcard-records-v1')).match(key.url);
  return record && { url: key.url, size: (await (await cache.match(key)).arrayBuffer()).byteLength, record: await record.text() };
}, repo);

/** The record kept of a cached file of `size` bytes: its length and Adler-32. */
const record = (size) => new RegExp(`^${size}:adler32:[0-9a-f]{8}$`);

/** Changes the cached weights file in place, keeping its headers and its record, or changes
 * its record (`no record`, `older record`). */
const damage = (p, how) => p.evaluate(async ([repo, how]) => {
  const cache = await caches.open('botcard-models-v1');
  let key;
  for (const k of await cache.keys()) {
    if (k.url.includes(repo) && /\/model\.(gguf|safetensors)$/.test(k.url) && (await cache.match(k)).ok) key = k;
  }
  if (how === 'no record') { await (await caches.open('botcard-records-v1')).delete(key.url); return; }
  const res = await cache.match(key);
  let bytes = new Uint8Array(await res.arrayBuffer());
  if (how === 'older record') {
    // The form records had before Adler-32: "<length>:<crc32>", of the bytes as cached.
    let crc = ~0;
    for (const byte of bytes) {
      crc ^= byte;
      for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0xedb88320 & -(crc & 1));
    }
    const older = `${bytes.length}:${((~crc) >>> 0).toString(16).padStart(8, '0')}`;
    await (await caches.open('botcard-records-v1')).put(key.url, new Response(older));
    return;
  }
  if (how === 'cut short') bytes = bytes.slice(0, bytes.length >> 1);
  else if (how === 'emptied') bytes = new Uint8Array(0);
  else bytes[bytes.length - 1000] ^= 0x10; // a weight's low bit: the file still parses
  await cache.put(key, new Response(bytes, { headers: res.headers }));
}, [REPO, how]);

const weightRequests = (repo = REPO) => hub.requests.filter((r) => r.startsWith(`/${repo}/`) && r.endsWith('model.safetensors')).length;

// q8_0 caches the weights as held (a model.gguf written after loading); f32 caches the
// downloaded model.safetensors as it arrives.
for (const [dtype, how] of [['q8_0', 'altered'], ['f32', 'cut short'], ['q8_0', 'no record'], ['f32', 'altered'], ['q8_0', 'emptied']]) {
  test(`a cached model file ${how} (${dtype}) is downloaded again and writes the same text`, async () => {
    const p = await page(b);
    await p.goto(url(dtype));
    const text = await greedy(p);
    const stored = await cachedWeights(p);
    assert.match(stored.record, record(stored.size));
    await damage(p, how);
    const before = weightRequests();
    await p.reload();
    assert.equal(await greedy(p), text);
    assert.equal(weightRequests(), before + 1, 'the checkpoint was downloaded again');
    // Cached again, whole.
    const again = await cachedWeights(p);
    assert.deepEqual(again, stored);
    // And the next visit reads it from the cache.
    await p.reload();
    assert.equal(await greedy(p), text);
    assert.equal(weightRequests(), before + 1);
    await p.context().close();
  });
}

// A model cached before records were Adler-32 keeps its CRC-32 record: it is still checked,
// by CRC-32, so it loads from the cache as it is, unless it reads back otherwise than recorded.
for (const [dtype, altered] of [['q8_0', false], ['f32', false], ['q8_0', true]]) {
  test(`a cached model file with a record of the older CRC-32 form (${dtype}) is ${altered ? 'found damaged and downloaded again' : 'read from the cache'}`, async () => {
    const p = await page(b);
    await p.goto(url(dtype));
    const text = await greedy(p);
    await cachedWeights(p);
    await damage(p, 'older record');
    if (altered) await damage(p, 'altered');
    assert.match((await cachedWeights(p)).record, /^\d+:[0-9a-f]{8}$/);
    const before = weightRequests();
    await p.reload();
    assert.equal(await greedy(p), text);
    assert.equal(weightRequests(), before + (altered ? 1 : 0));
    await p.context().close();
  });
}

test('an f32 checkpoint larger than a download\'s backlog for the cache is cached whole as it arrives, and the next visit reads it', async () => {
  const p = await page(b);
  await p.goto(url('f32', BIG.repo));
  const text = await greedy(p);
  const stored = await cachedWeights(p, BIG.repo);
  assert.equal(stored.size, statSync(join(ROOT, BIG.dir, 'model.safetensors')).size);
  assert.match(stored.record, record(stored.size));
  await p.reload();
  assert.equal(await greedy(p), text);
  assert.equal(weightRequests(BIG.repo), 1, 'read from the cache');
  await p.context().close();
});

test('with storage full the model runs uncached, and the widget says so', async () => {
  // The larger f32 checkpoint fills the backlog of its download for the cache before the cache
  // gives up: the download must go on without it.
  for (const [dtype, repo] of [['f32', REPO], ['q8_0', REPO], ['f32', BIG.repo]]) {
    const p = await page(b);
    const cdp = await p.context().newCDPSession(p);
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: site.url, quotaSize: 64 * 1024 });
    await p.goto(url(dtype, repo));
    const text = await greedy(p);
    assert.ok(text.length > 'My dream is'.length);
    const note = p.locator('.bot-widget .note');
    await note.filter({ hasText: "this browser's storage for the site is full" }).waitFor();
    await shot(p, `storage-full-${dtype}${repo === BIG.repo ? '-big' : ''}`);
    // Nothing of the weights was kept, and a reload downloads and runs the model again.
    const kept = await p.evaluate(async () => {
      const cache = await caches.open('botcard-models-v1');
      const urls = [];
      for (const k of await cache.keys()) if (/model\.(gguf|safetensors)$/.test(k.url) && (await cache.match(k)).ok) urls.push(k.url);
      return urls;
    });
    assert.deepEqual(kept, []);
    const before = weightRequests(repo);
    await p.reload();
    assert.equal(await greedy(p), text);
    assert.equal(weightRequests(repo), before + 1);
    await p.context().close();
  }
});
