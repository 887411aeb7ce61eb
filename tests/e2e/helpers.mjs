// Shared pieces of the browser tests: a plain static server for www/, a mock hub laid out like
// huggingface.co serving the fixture models, and headless Debian Chromium via playwright-core.
import { createServer } from 'node:http';
import { readFile, mkdir, stat } from 'node:fs/promises';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { extname, join, normalize, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SHOTS = join(ROOT, 'target', 'e2e');

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.wasm': 'application/wasm', '.json': 'application/json', '.md': 'text/markdown; charset=utf-8',
};

function listen(handler) {
  const server = createServer(async (req, res) => {
    try { await handler(req, res); } catch (e) { res.writeHead(500).end(String(e)); }
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    resolve({ server, url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }) });
  }));
}

async function sendFile(req, res, path, extraHeaders = {}) {
  if (!existsSync(path)) { res.writeHead(404, extraHeaders).end('not found'); return; }
  const [body, { mtime }] = await Promise.all([readFile(path), stat(path)]);
  // Validators, as static hosts send them: the browser's HTTP cache then keeps files (and
  // Chromium its compiled WebAssembly) between visits.
  const validators = { 'last-modified': mtime.toUTCString(), etag: `"${body.length.toString(16)}-${mtime.getTime().toString(16)}"` };
  if (req.headers['if-none-match'] === validators.etag) { res.writeHead(304, { ...validators, ...extraHeaders }).end(); return; }
  res.writeHead(200, { 'content-type': TYPES[extname(path)] || 'application/octet-stream', 'content-length': body.length, ...validators, ...extraHeaders });
  res.end(body);
}

/** Serves www/ (or `root`) like any static host would (validators, no special headers), plus
 * `extraPages` (path -> a function giving HTML), pages of someone else's site on the same origin. Setting
 * the returned server's `root` deploys another folder; setting its `delay` (ms) answers every
 * request that much later, as a host that far away would; `requests` lists the paths asked for. */
export function staticServer({ extraPages = {}, root = join(ROOT, 'www') } = {}) {
  const requests = [];
  const site = { root, requests };
  return listen(async (req, res) => {
    let path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    requests.push(req.url);
    if (site.delay) await new Promise((r) => setTimeout(r, site.delay));
    if (extraPages[path]) { res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(extraPages[path]()); return; }
    if (path.endsWith('/')) path += 'index.html';
    const file = normalize(join(site.root, path));
    if (!file.startsWith(site.root)) { res.writeHead(403).end(); return; }
    await sendFile(req, res, file);
  }).then((s) => Object.assign(site, s));
}

/** Which fixture folder answers for which hub repo. */
const HUB = {
  'botcard/tiny-2021': 'tests/fixtures/models/tiny-2021',
  'botcard/tiny-st': 'tests/fixtures/models/tiny-st',
  'botcard/relu-st': 'tests/fixtures/models/relu-st',
  'evil/hostile': 'tests/fixtures/cards/hostile',
  'huggingtweets/joebiden': 'tests/fixtures/models/tiny-2021',
};

/** A local hub: {hub}/{owner}/{name}/resolve/main/{file}, CORS open like huggingface.co. */
export function mockHub({ extraPages = {}, repos = {}, handlers = {} } = {}) {
  const map = { ...HUB, ...repos };
  const cors = { 'access-control-allow-origin': '*' };
  const requests = [];
  return listen(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    requests.push(path);
    if (handlers[path]) { handlers[path](req, res, cors); return; }
    if (extraPages[path]) { res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(extraPages[path]()); return; }
    const m = path.match(/^\/([\w.-]+\/[\w.-]+)\/resolve\/main\/([\w.-]+)$/);
    if (!m || !map[m[1]]) { res.writeHead(404, cors).end('Repository not found'); return; }
    await sendFile(req, res, join(resolve(ROOT, map[m[1]]), m[2]), cors);
  }).then((s) => Object.assign(s, { requests }));
}

export const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

const LAUNCH = { executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS };

export async function browser() {
  return chromium.launch(LAUNCH);
}

/** A browser context with a fresh profile on disk, as a visitor's browser has (its folder goes
 * when it closes). `browser().newContext()` is off the record: its Cache API lives in memory
 * and refused the 500 MB put of an f32 GPT-2 124M ("Unexpected internal error"). */
export async function profileContext() {
  const dir = mkdtempSync(join(tmpdir(), 'botcard-profile-'));
  const context = await chromium.launchPersistentContext(dir, LAUNCH);
  const close = context.close.bind(context);
  context.close = async () => { await close(); rmSync(dir, { recursive: true, force: true }); };
  return context;
}

/** A fresh context whose requests to the internet fail at once (the tests run offline). */
export async function page(b) {
  const context = await b.newContext();
  await context.route(/^https?:\/\/(?!127\.0\.0\.1)/, (r) => r.abort('internetdisconnected'));
  const p = await context.newPage();
  p.errors = [];
  p.on('pageerror', (e) => p.errors.push(String(e)));
  return p;
}

export async function shot(p, name) {
  await mkdir(SHOTS, { recursive: true });
  await p.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Waits until the widget says its model is ready. */
export async function ready(target, timeout = 60000) {
  const status = target.locator('.bot-widget .status');
  try {
    await status.filter({ hasText: /is ready/ }).waitFor({ timeout });
  } catch (e) {
    // What the widget said instead is what a failure report needs.
    const said = await status.allTextContents().catch(() => []);
    e.message = `${e.message}\nThe widget's status line: ${JSON.stringify(said)}`;
    // The stack, which is what gets printed, was written with the message before this line.
    e.stack = `${e.name}: ${e.message}`;
    throw e;
  }
}

/** Waits for the widget's model, computes to the end, and returns the samples, the status line
 * and the WebAssembly build that ran. */
export async function compute(p) {
  await ready(p);
  await p.getByRole('button', { name: 'Compute' }).click();
  const status = p.locator('.bot-widget .status').filter({ hasText: /tokens\/s/ });
  await status.waitFor({ timeout: 60000 });
  return {
    texts: await p.locator('ol[aria-label="Generated samples"] li').allTextContents(),
    status: await status.textContent(),
    build: await p.locator('bot-widget').first().getAttribute('data-build'),
  };
}

/** Waits until the service worker of `p`'s origin is installed and active (30 s at most: an
 * install fails when a file of www/ no longer has the hash in www/version.js, i.e. www/ was
 * edited after ./build.sh stamped it). */
export async function serviceWorkerReady(p) {
  const ok = await p.evaluate(() => Promise.race([
    navigator.serviceWorker.ready.then(() => true),
    new Promise((r) => setTimeout(() => r(false), 30000)),
  ]));
  if (!ok) throw new Error('the service worker did not install (run ./build.sh, or ./build.sh stamp www, after editing www/)');
}

/** Waits until the model whose files are at `base` is kept in the worker's cache as held (the
 * model.gguf quantized at load), which is written a moment after the model is ready, with its
 * record (written just after it): the worker does not use a cached file without its record, so
 * a reload between the two would download the model again. */
export const kept = (p, base, timeout) => until(p, async (url) => Boolean((await (await caches.open('botcard-models-v1')).match(url))?.headers.get('x-botcard-held')
  && await (await caches.open('botcard-records-v1')).match(url)), `${base}model.gguf`, timeout);

/** Waits until `done()` (it may be async) is truthy, checked every 100 ms, and returns it;
 * throws after `timeout` ms, naming `what`. */
export async function waitFor(done, what = String(done), timeout = 30000) {
  const end = Date.now() + timeout;
  for (;;) {
    const value = await done();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Waits until `fn(arg)`, evaluated in `p` (it may be async), is truthy, and returns it.
 * Playwright's waitForFunction does not wait for an async function: its promise is truthy. */
export function until(p, fn, arg, timeout = 30000) {
  return waitFor(() => p.evaluate(fn, arg), String(fn), timeout);
}
