// Deploys: a browser that has one build's service worker and cache meets the next build on the
// same static host. Builds A, B and C are copies of www/ whose JS, HTML and wasm differ (a
// marker in the footer and app.js, a custom section appended to each wasm), each stamped with
// its own version.js by ./build.sh stamp, served in turn from one origin.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, readFileSync, rmSync, appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, browser, compute, page, ready, shot, staticServer, serviceWorkerReady, until, waitFor } from './helpers.mjs';

const WORK = join(ROOT, 'target', 'e2e-deploy');
const WASM = ['pkg/botcard_bg.wasm', 'pkg-relaxed/botcard_bg.wasm', 'pkg-threads/botcard_bg.wasm'];
const HELPER = 'pkg-threads/snippets/wasm-bindgen-rayon-38edf6e439f6d70d/src/workerHelpers.no-bundler.js';
const HELPER_JS = ['pkg-threads/botcard.js', HELPER];

/** A copy of www/ as build `name`: its footer and app.js say so, and its wasm differs. */
function makeBuild(name) {
  const dir = join(WORK, name);
  cpSync(join(ROOT, 'www'), dir, { recursive: true });
  const index = join(dir, 'index.html');
  writeFileSync(index, readFileSync(index, 'utf8').replace('</footer>', ` Build ${name}.</footer>`));
  appendFileSync(join(dir, 'app.js'), `\n// build ${name}\n`);
  // A wasm custom section (id 0) named "build" holding the name: still a valid module.
  const payload = Buffer.concat([Buffer.from([5]), Buffer.from('build'), Buffer.from(name)]);
  for (const f of WASM) appendFileSync(join(dir, f), Buffer.concat([Buffer.from([0, payload.length]), payload]));
  for (const f of HELPER_JS) appendFileSync(join(dir, f), `\n// build ${name}\n`);
  execFileSync('bash', [join(ROOT, 'build.sh'), 'stamp', dir]);
  return dir;
}

const sha = (dir, f) => createHash('sha256').update(readFileSync(join(dir, f))).digest('hex');

let site, b, A, B, C;
before(async () => {
  rmSync(WORK, { recursive: true, force: true });
  [A, B, C] = ['A', 'B', 'C'].map(makeBuild);
  site = await staticServer({ root: A });
  b = await browser();
});
after(async () => { await b?.close(); await site?.close(); rmSync(WORK, { recursive: true, force: true }); });

/** Which build the page is: the footer's marker. */
const footer = (p) => p.locator('footer').textContent().then((t) => t.match(/Build (\w)\./)?.[1]);

/** What the page's worker gets for `path` now: the SHA-256 of the bytes, or the HTTP status. */
async function fromWorker(p, path) {
  const worker = p.workers().find((w) => w.url().endsWith('/worker.js'));
  return worker.evaluate(async (path) => {
    const res = await fetch(path);
    if (!res.ok) return res.status;
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', await res.arrayBuffer()));
    return Array.from(digest, (x) => x.toString(16).padStart(2, '0')).join('');
  }, path);
}

/** Computes to the end and returns the WebAssembly build that ran. */
async function computeBuild(p) {
  const { texts, build } = await compute(p);
  assert.ok(texts[0].length > 'My dream is'.length, texts[0]);
  return build;
}

const buildCaches = (p) => p.evaluate(async () => (await caches.keys()).filter((k) => k.startsWith('botcard-build-')));

/** The id ./build.sh stamped build `dir` with. */
const idOf = (dir) => readFileSync(join(dir, 'version.js'), 'utf8').match(/"id": "(\w+)"/)[1];

/** Waits until the next navigation in `p`'s origin opens build `dir`: the service worker has
 * heard of it from the host (it asks a few seconds after a navigation) and it is installed whole
 * here (www/sw.js names it in its cache botcard-next-build). */
const opensNext = (p, dir) => until(p, async (id) => (await (await caches.match('/next', { cacheName: 'botcard-next-build' }))?.json())?.id === id, idOf(dir), 60000);

/** Deploys build `dir` (footer `name`) on the host while `p` shows build `was`: a reload is still
 * `was`, served without waiting for the host, and once the service worker has heard of `dir`,
 * the next one is `name`. (The first reload may already be `name` where the browser's own update
 * of sw.js, which the last page's registration asks for, fetched the new version.js first: that
 * new service worker installs its build as it installs.) */
async function deployAndReach(p, dir, name, was) {
  site.root = dir;
  await p.reload();
  const first = await footer(p);
  assert.ok([was, name].includes(first), `build ${first} after deploying ${name} over ${was}`);
  await opensNext(p, dir);
  if (first === was) await p.reload();
  assert.equal(await footer(p), name);
}

test('a new deploy reaches the next page whole, and an open page keeps its own build', async () => {
  const p1 = await page(b);
  site.root = A;
  await p1.goto(`${site.url}/`);
  await ready(p1);
  await serviceWorkerReady(p1);
  const asked = site.requests.length;
  await p1.reload();
  assert.equal(await footer(p1), 'A');
  const wasm = await computeBuild(p1);
  assert.equal(await fromWorker(p1, `${wasm}/botcard_bg.wasm`), sha(A, `${wasm}/botcard_bg.wasm`));
  // A few seconds after that navigation, the service worker asks the host for its build (A).
  await waitFor(() => site.requests.slice(asked).includes('/version.js'), 'the host to be asked', 60000);

  // Build B is deployed. The open page still runs, and gets build A's files only.
  site.root = B;
  await p1.getByRole('button', { name: 'Compute' }).click();
  await p1.locator('.bot-widget .status').filter({ hasText: /tokens\/s/ }).waitFor({ timeout: 60000 });
  assert.equal(await fromWorker(p1, `${wasm}/botcard_bg.wasm`), sha(A, `${wasm}/botcard_bg.wasm`));
  assert.equal(await p1.evaluate(() => fetch('app.js').then((r) => r.text())), readFileSync(join(A, 'app.js'), 'utf8'));
  // A build A file this page had not fetched yet is on the host only as build B's: refused.
  // (The page is controlled, so isolated, and runs the threaded build; the first visit fetched
  // the relaxed-simd one before the service worker was there.)
  assert.equal(wasm, 'pkg-threads');
  assert.equal(await fromWorker(p1, 'pkg-relaxed/botcard_bg.wasm'), 503);

  // A page opened now is still build A, at once, without waiting for the host: its navigation
  // has the service worker ask the host afterwards, and install build B for the next page,
  // which is build B, whole: its HTML, JS and wasm.
  const p2 = await p1.context().newPage();
  await p2.goto(`${site.url}/`);
  assert.equal(await footer(p2), 'A');
  await opensNext(p2, B);
  await p2.reload();
  assert.equal(await footer(p2), 'B');
  assert.equal(await p2.evaluate(() => fetch('app.js').then((r) => r.text())), readFileSync(join(B, 'app.js'), 'utf8'));
  const wasm2 = await computeBuild(p2);
  assert.equal(await fromWorker(p2, `${wasm2}/botcard_bg.wasm`), sha(B, `${wasm2}/botcard_bg.wasm`));
  assert.equal((await buildCaches(p2)).length, 2, 'build A stays while a page uses it');
  // The threaded build's helper workers start from blob: URLs and come to the service worker
  // without a client id: the URL of the build's JS they import names the build, and that JS's
  // own imports name it in their referrer. (The helpers themselves cannot be asked: they wait
  // for work. A blob: worker started by the page's worker stands in for them.) Unnamed, a
  // request of theirs would get the newest build.
  const glue = `${site.url}/pkg-threads/botcard.js?build=${idOf(A)}`;
  const helper = HELPER;
  const worker = p1.workers().find((w) => w.url().endsWith('/worker.js'));
  const blob = await worker.evaluate(async ([glue, helper]) => {
    const source = `const hash = async (r) => Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', await r.arrayBuffer())), (x) => x.toString(16).padStart(2, '0')).join('');
      postMessage([await hash(await fetch('${glue}')), await hash(await fetch('${helper}', { referrer: '${glue}' })), await hash(await fetch('${helper}'))]);`;
    const w = new Worker(URL.createObjectURL(new Blob([source], { type: 'text/javascript' })), { type: 'module' });
    return new Promise((resolve) => { w.onmessage = (m) => resolve(m.data); });
  }, [glue, new URL(helper, site.url + '/').href]);
  assert.deepEqual(blob, [sha(A, 'pkg-threads/botcard.js'), sha(A, helper), sha(B, helper)]);
  await shot(p2, 'deploy-new-build');

  // Once no page uses build A, its cache is deleted.
  await p1.close();
  // The service worker tidies a few seconds after a navigation. (Each reload waits only for
  // the service worker's answer, the commit, not for the page's load.)
  await waitFor(async () => {
    if ((await buildCaches(p2)).length === 1) return true;
    await p2.reload({ waitUntil: 'commit' });
    await new Promise((r) => setTimeout(r, 1000));
    return false;
  }, 'build A\'s cache to be deleted', 60000);
  await p2.context().close();
});

test('a deploy caught half uploaded is never installed: pages stay on the whole last build', async () => {
  const p = await page(b);
  site.root = B;
  await p.goto(`${site.url}/`);
  await serviceWorkerReady(p);
  await p.reload();
  assert.equal(await footer(p), 'B');
  // The host has build C's version.js, HTML and JS, but still build B's wasm.
  const half = join(WORK, 'half');
  cpSync(C, half, { recursive: true });
  for (const f of WASM) cpSync(join(B, f), join(half, f));
  site.root = half;
  const asked = site.requests.length;
  await p.reload();
  assert.equal(await footer(p), 'B');
  const wasm = await computeBuild(p);
  assert.equal(await fromWorker(p, `${wasm}/botcard_bg.wasm`), sha(B, `${wasm}/botcard_bg.wasm`));
  // Meanwhile the navigation told the service worker of build C, which downloaded it, met build
  // B's wasm among its files, and kept nothing of it.
  await waitFor(async () => site.requests.slice(asked).includes('/pkg/botcard_bg.wasm') && (await buildCaches(p)).length === 1,
    'the half deploy to be tried and dropped', 60000);
  // The upload finishes: the next navigation hears of it, and the one after is build C.
  await deployAndReach(p, C, 'C', 'B');
  const wasmC = await computeBuild(p);
  assert.equal(await fromWorker(p, `${wasmC}/botcard_bg.wasm`), sha(C, `${wasmC}/botcard_bg.wasm`));
  await p.context().close();
});

test('a rollback on the host opens the earlier build again', async () => {
  const p = await page(b);
  site.root = A;
  await p.goto(`${site.url}/`);
  await serviceWorkerReady(p);
  await p.reload();
  assert.equal(await footer(p), 'A');
  await deployAndReach(p, B, 'B', 'A');
  // Build B is taken down and A put back: A is still installed here, and is what the next
  // navigation opens once a navigation has asked the host.
  await deployAndReach(p, A, 'A', 'B');
  const wasm = await computeBuild(p);
  assert.equal(await fromWorker(p, `${wasm}/botcard_bg.wasm`), sha(A, `${wasm}/botcard_bg.wasm`));
  await p.context().close();
});
