// Offline support: the app shell, the plain wasm build and the bundled cards are cached at
// install, the build the worker runs when it is fetched. Same-origin requests go to the
// network first (so updates show), the cache when offline. Model files are
// not this cache's business: the worker keeps every model it loads, the default bot included, in
// its own Cache API store.
// Cross-origin isolation: a static host cannot send COOP/COEP headers, so every same-origin
// response gets them here; from the second visit on the page is isolated and the worker runs
// the multi-threaded build. `credentialless` lets other sites' avatars load without CORP.
const CACHE = 'botcard-shell-v6';
const SHELL = [
  './', 'index.html', 'embed.html', 'embed.js', 'style.css', 'widget.css', 'app.js', 'widget.js', 'card-view.js', 'models.js',
  'worker.js', 'pkg/botcard.js', 'pkg/botcard_bg.wasm', 'models/bundled.json', 'models/default/README.md',
];

/** `res` with the headers that make a page cross-origin isolated. */
function isolated(res) {
  if (res.status === 0 || res.status === 204 || res.status === 304) return res;
  const headers = new Headers(res.headers);
  headers.set('Cross-Origin-Opener-Policy', 'same-origin');
  headers.set('Cross-Origin-Embedder-Policy', 'credentialless');
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}

self.addEventListener('install', (e) => {
  e.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll(SHELL);
    // The bundled cards, from the one list of them.
    const bundled = await (await cache.match('models/bundled.json')).json();
    await cache.addAll(bundled.map((m) => `models/${m}/README.md`));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (e) => {
  e.waitUntil((async () => {
    for (const k of await caches.keys()) if (k.startsWith('botcard-shell-') && k !== CACHE) await caches.delete(k);
    await self.clients.claim();
  })());
});

self.addEventListener('fetch', (e) => {
  const url = new URL(e.request.url);
  if (e.request.method !== 'GET' || url.origin !== location.origin) return;
  e.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const res = await fetch(e.request);
      // Refresh what is already cached (shell files, bundled cards), and keep the WebAssembly
      // build the worker chose (pkg/ is in the shell; pkg-relaxed/ or pkg-threads/ runs where
      // the browser can) so that offline visits run the same one.
      const build = /\/pkg[^/]*\//.test(url.pathname);
      if (res.ok && (build || await cache.match(e.request, { ignoreSearch: true }))) cache.put(e.request, res.clone());
      return isolated(res);
    } catch (err) {
      const hit = await cache.match(e.request, { ignoreSearch: true });
      if (hit) return isolated(hit);
      throw err;
    }
  })());
});
