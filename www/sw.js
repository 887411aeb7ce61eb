// Offline support and deploys. version.js (written by ./build.sh) names this build and lists its
// files with their SHA-256. A build is cached whole (or not at all) in its own cache, and every
// page is served from one build: its HTML, JS and wasm always belong together, even while a new
// deploy is half uploaded or an old tab is still open. A page and the workers it starts are
// pinned to the build their page came from; a navigation gets the build the last ones settled
// on (installed last, or the host's after a rollback), and then asks the host for a newer one
// for the next. Caches of builds no open page uses are deleted.
// Model files are not this cache's business: the worker keeps the models it loads, the default
// bot included, in its own Cache API store.
// Cross-origin isolation: a static host cannot send COOP/COEP headers, so the responses that
// set it (a page's and a worker's) get them here; from the second visit on the page is
// isolated and the worker runs the multi-threaded build. `credentialless` lets other sites'
// avatars load without CORP.
importScripts('version.js');
const BUILD = self.BOTCARD_BUILD;
const PREFIX = 'botcard-build-';
/** The entry in a build's cache that says it is whole: the build's manifest and when it was
 * installed. Written last. */
const MANIFEST = '/botcard-build-manifest';
/** client id -> {build, at} (the build's id, when pinned), for every page and worker this
 * origin serves (kept on disk too: a service worker is stopped and restarted while its pages
 * stay open). */
const PINS = 'botcard-pins';
const pins = new Map();
// A page's pin is written before the page exists as a client (while its navigation is answered),
// so pins this young are kept whether or not their client is open yet.
const PIN_GRACE_MS = 10000;
// A navigation's background work (asking the host for a new deploy, then tidying) waits this
// long: its network and Cache Storage work took CPU time from the page's own load (its worker's
// WebAssembly and model) on a machine of few cores.
const AFTER_NAVIGATION_MS = 3000;

const cacheName = (id) => PREFIX + id;
const scoped = (path) => new URL(path, self.registration.scope).href;

/** The path of a request inside the site (`index.html` for the folder itself). */
function sitePath(url) {
  let path = url.href.slice(self.registration.scope.length).split(/[?#]/)[0];
  if (path === '' || path.endsWith('/')) path += 'index.html';
  return path;
}

/** Whether the response to `request` sets isolation: a document's or a worker's. The rest
 * (scripts, wasm, models) is handed over as it is, which the browser reads without this
 * worker's help. */
const setsIsolation = (request) => request.mode === 'navigate' || request.destination.endsWith('worker');

/** `res` with the headers that make a page cross-origin isolated. */
function isolated(res) {
  if (res.status === 0 || res.status === 204 || res.status === 304) return res;
  const headers = new Headers(res.headers);
  headers.set('Cross-Origin-Opener-Policy', 'same-origin');
  headers.set('Cross-Origin-Embedder-Policy', 'credentialless');
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}

async function sha256(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** A file of `manifest`'s build from the host, or null when the host now has other bytes under
 * its name (a newer deploy): those must never be mixed into this build. */
async function download(manifest, path) {
  const res = await fetch(scoped(path), { cache: 'no-cache' });
  if (!res.ok) return null;
  const bytes = await res.arrayBuffer();
  if (await sha256(bytes) !== (manifest.shell[path] ?? manifest.lazy[path])) return null;
  // The body is decoded: the host's encoding and length no longer describe it.
  const headers = new Headers(res.headers);
  headers.delete('content-encoding');
  headers.delete('content-length');
  return new Response(bytes, { headers });
}

/** The cache that names the build a navigation opens (`{id}` under NEXT_KEY): the build
 * installed last, or the one the host named last where that was installed before (a rollback).
 * A navigation reads this one entry, not every build's manifest. */
const NEXT = 'botcard-next-build';
const NEXT_KEY = '/next';

/** The id of the build a navigation opens; null before one was named. */
async function nextBuild() {
  const hit = await caches.match(NEXT_KEY, { cacheName: NEXT });
  return hit ? (await hit.json()).id : null;
}

async function setNextBuild(id) {
  await (await caches.open(NEXT)).put(NEXT_KEY, Response.json({ id }));
}

/** The manifests of the whole builds cached here, newest first. */
async function builds() {
  const found = [];
  for (const name of await caches.keys()) {
    if (!name.startsWith(PREFIX)) continue;
    const entry = await (await caches.open(name)).match(MANIFEST);
    if (entry) found.push(await entry.json());
  }
  return found.sort((a, b) => b.installed - a.installed);
}

/** build id -> its manifest, for the whole builds this service worker has read one of (a
 * whole build's manifest never changes; tidy forgets the builds it deletes). */
const manifests = new Map();

/** The manifest of build `id` when it is cached whole, else of the build a navigation opens
 * (nextBuild), else of the build installed last (null when there is none). Asks only `id`'s
 * cache first: this runs for every request. */
async function manifestFor(id) {
  if (id && manifests.has(id)) return manifests.get(id);
  const entry = id && await caches.match(MANIFEST, { cacheName: cacheName(id) });
  if (!entry) {
    const next = await nextBuild();
    return next && next !== id ? manifestFor(next) : (await builds())[0] ?? null;
  }
  const manifest = await entry.json();
  manifests.set(id, manifest);
  return manifest;
}

/** {build, at} for a client pinned to a build, else null. */
async function pinOf(clientId) {
  if (!clientId) return null;
  if (!pins.has(clientId)) {
    const hit = await (await caches.open(PINS)).match(`/pin/${clientId}`);
    if (!hit) return null;
    pins.set(clientId, await hit.json());
  }
  return pins.get(clientId);
}

async function pin(clientId, build) {
  if (!clientId) return;
  const entry = { build, at: Date.now() };
  pins.set(clientId, entry);
  await (await caches.open(PINS)).put(`/pin/${clientId}`, Response.json(entry));
}

/** Deletes the pins of closed pages and workers, and the caches of builds that neither an open
 * one nor the next navigation will use. */
async function tidy() {
  const open = new Set((await self.clients.matchAll({ includeUncontrolled: true, type: 'all' })).map((c) => c.id));
  const pinCache = await caches.open(PINS);
  const keep = new Set();
  for (const key of await pinCache.keys()) {
    const id = key.url.split('/pin/')[1];
    const entry = await pinOf(id);
    if (entry && (open.has(id) || Date.now() - entry.at < PIN_GRACE_MS)) keep.add(entry.build);
    else { pins.delete(id); await pinCache.delete(key); }
  }
  keep.add(await nextBuild());
  keep.add((await builds())[0]?.id);
  for (const name of await caches.keys()) {
    const id = name.slice(PREFIX.length);
    if (name.startsWith(PREFIX) && !keep.has(id)) {
      manifests.delete(id);
      await caches.delete(name);
    }
  }
  // Before builds had ids, the shell lived in one hand-named cache.
  for (const name of await caches.keys()) if (name.startsWith('botcard-shell-')) await caches.delete(name);
}

/** build id -> the promise of its install, while one runs. */
const installing = new Map();

/** Caches every shell file of `build` (a manifest, as version.js has it), each checked against
 * its SHA-256; marks the cache whole last. A deploy caught half uploaded, or a dropped
 * connection, leaves nothing behind (the next visit tries again) and rejects. */
function install(build) {
  if (!installing.has(build.id)) {
    installing.set(build.id, (async () => {
      const name = cacheName(build.id);
      const cache = await caches.open(name);
      if (await cache.match(MANIFEST)) return;
      try {
        for (const path of Object.keys(build.shell)) {
          const res = await download(build, path);
          if (!res) throw new Error(`botcard: ${path} on the host is not build ${build.id}'s; not installing it.`);
          await cache.put(scoped(path), res);
        }
        await cache.put(MANIFEST, Response.json({ ...build, installed: Date.now() }));
        await setNextBuild(build.id);
      } catch (err) {
        await caches.delete(name);
        throw err;
      }
    })().finally(() => installing.delete(build.id)));
  }
  return installing.get(build.id);
}

self.addEventListener('install', (e) => {
  // Safe at once: open pages stay pinned to the build they came from.
  e.waitUntil(install(BUILD).then(() => self.skipWaiting()));
});

// No tidying here: navigations wait for an activation to finish before they are served, and
// with tidying in it a navigation now and then did not commit within 30 s (the deploy test, about
// one run in five). The round after the next navigation tidies (afterNavigation).

/** Asks the host for its build (its version.js) and installs it, whole, for the next
 * navigation, which opens the build last heard of from the host, even where that was installed
 * before a build the host has since replaced (a rollback). Offline, or with a deploy caught
 * half uploaded, nothing changes. Any service worker installs any build: the browser's own
 * update of sw.js is not waited for. */
async function checkForDeploy() {
  let host = null;
  try {
    const res = await fetch(scoped('version.js'), { cache: 'no-cache' });
    const text = res.ok ? await res.text() : '';
    host = JSON.parse(text.slice(text.indexOf('{'), text.lastIndexOf('}') + 1));
  } catch { return; /* offline, or no version.js there */ }
  if (!(host?.id && host.shell && host.lazy)) return;
  await install(host);
  if (await nextBuild() !== host.id) await setNextBuild(host.id);
}

let background = null;
/** Whether a navigation came after the running round of background work asked the host. */
let askedAgain = false;
/** A navigation's background work, AFTER_NAVIGATION_MS from now: a new deploy on the host is
 * installed, then the builds no page uses are deleted. One round serves every navigation that
 * comes before it asks the host; one that comes later gets another round. */
function afterNavigation() {
  if (background) {
    askedAgain = true;
    return background;
  }
  background = (async () => {
    do {
      await new Promise((r) => setTimeout(r, AFTER_NAVIGATION_MS));
      askedAgain = false;
      await checkForDeploy().catch((err) => console.warn('botcard: a new deploy could not be installed.', err));
      await tidy();
    } while (askedAgain);
  })().finally(() => { background = null; });
  return background;
}

/** Page `path` of the build a navigation opens (nextBuild), its new page pinned to that build;
 * null where no build is cached here (the host's page is fetched). The host is asked for a
 * newer build only afterwards, for the next navigation (afterNavigation): waiting for its answer
 * made every visit a round trip to the host slower before its model was ready, and seconds
 * slower on a connection that answers nothing. */
async function navigate(e, path) {
  e.waitUntil(afterNavigation());
  const build = await manifestFor(await nextBuild());
  const hit = build && await caches.match(scoped(path), { cacheName: cacheName(build.id) });
  if (!hit) return null;
  // Its pin is held here at once and written down meanwhile, not waited for.
  e.waitUntil(pin(e.resultingClientId, build.id));
  return hit;
}

/** The build a URL names (`?build=`), if any. */
function buildNamed(href) {
  try { return new URL(href).searchParams.get('build'); } catch { return null; }
}

/** A file of the build the request's page came from. */
async function fromBuild(e, url, path) {
  // Workers started from blob: URLs (the threaded build's helpers) come without a client id.
  // They import the build's JS by a URL that names the build (www/worker.js), and what that JS
  // imports names it in its referrer.
  const named = buildNamed(url) ?? buildNamed(e.request.referrer);
  const id = named ?? (await pinOf(e.clientId))?.build;
  const manifest = await manifestFor(id);
  if (!manifest) return null;
  // Which build this is, for the page's worker (its own build, not the host's newest).
  if (path === 'version.js') {
    const { installed, ...build } = manifest;
    return new Response(`self.BOTCARD_BUILD = ${JSON.stringify(build)};\n`, { headers: { 'content-type': 'text/javascript' } });
  }
  if (!(path in manifest.shell || path in manifest.lazy)) return null;
  // A worker started by a page (or by a worker) belongs to the same build: held here at once
  // (its own requests find it), written down meanwhile, as a page's pin is.
  if (e.request.destination.endsWith('worker')) e.waitUntil(pin(e.resultingClientId, manifest.id));
  const res = await cached(manifest, path);
  return res ?? new Response(`not part of build ${manifest.id}`, { status: 503 });
}

/** A file of `manifest`'s build from its cache; one that is not there yet (a file the worker
 * fetches only where it is used: the relaxed-simd, threaded and training builds) is downloaded,
 * checked and cached. Null when the host now has other bytes under its name. */
async function cached(manifest, path) {
  const cache = await caches.open(cacheName(manifest.id));
  const hit = await cache.match(scoped(path));
  if (hit) return hit;
  const res = await download(manifest, path);
  if (!res) return null;
  await cache.put(scoped(path), res.clone());
  return res;
}

// {type: 'warm', build} from a page once its model is ready: the files of the WebAssembly build
// (a folder, e.g. pkg-threads) that its worker will run on the next visit, which this service
// worker makes cross-origin isolated, are cached now, while the visitor reads the page, so
// that the next visit downloads nothing before its model is ready.
self.addEventListener('message', (e) => {
  if (e.data?.type !== 'warm' || typeof e.data.build !== 'string') return;
  e.waitUntil((async () => {
    const manifest = await manifestFor((await pinOf(e.source?.id))?.build);
    if (!manifest) return;
    for (const path of Object.keys(manifest.lazy)) {
      if (path.startsWith(`${e.data.build}/`)) await cached(manifest, path);
    }
  })().catch((err) => console.warn('botcard: the next visit\'s build could not be cached ahead.', err)));
});

self.addEventListener('fetch', (e) => {
  const url = new URL(e.request.url);
  if (e.request.method !== 'GET' || !url.href.startsWith(self.registration.scope)) return;
  const path = sitePath(url);
  e.respondWith((async () => {
    const page = e.request.mode === 'navigate' && (path === 'index.html' || path === 'embed.html');
    const res = (page ? await navigate(e, path) : await fromBuild(e, url, path)) ?? await fetch(e.request);
    return setsIsolation(e.request) ? isolated(res) : res;
  })());
});
