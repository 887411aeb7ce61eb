// Offline support: the app shell, the wasm, the bundled cards and the default bot are cached at
// install. Same-origin requests go to the network first (so updates show), the cache when offline.
const CACHE = 'botcard-shell-v2';
const SHELL = [
  './', 'index.html', 'embed.html', 'style.css', 'app.js', 'widget.js', 'card-view.js', 'models.js', 'worker.js',
  'pkg/botcard.js', 'pkg/botcard_bg.wasm',
  'models/default/README.md', 'models/default/config.json', 'models/default/model.safetensors',
  'models/default/tokenizer.json',
  'models/huggingtweets/barackobama-karlousm-uofofn/README.md',
  'models/huggingtweets/elonmusk-hirox246-hitoshinagai1/README.md',
  'models/huggingtweets/joebiden/README.md',
];

self.addEventListener('install', (e) => {
  e.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
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
      if (res.ok && SHELL.some((p) => url.pathname.endsWith(p === './' ? '/' : `/${p}`))) cache.put(e.request, res.clone());
      return res;
    } catch (err) {
      const hit = await cache.match(e.request, { ignoreSearch: true });
      if (hit) return hit;
      throw err;
    }
  })());
});
