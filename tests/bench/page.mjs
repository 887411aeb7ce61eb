// Model ready on the card page itself (www/index.html), as a visitor opens it: the page's
// modules, its widget, the worker and its WebAssembly, the card, then the model. The first visit
// is cold (it downloads the model, which the worker then caches as held); the second and third
// are served by the service worker the first installed, cross-origin isolated, so the worker
// runs the threaded build. Each figure is seconds from navigation to the widget's `bot-ready`,
// the median over a few fresh profiles on disk. Prints one JSON line. Not a test.
//   node tests/bench/page.mjs default LABEL [RTT_MS]     (the bundled default bot)
//   node tests/bench/page.mjs MODEL_DIR LABEL [RTT_MS]   (a model folder, served as a hub repo)
// RTT_MS: the site answers each request that many milliseconds late, as a host that far away.
import { resolve } from 'node:path';
import { kept, mockHub, profileContext, ready, serviceWorkerReady, staticServer, until } from '../e2e/helpers.mjs';
import { median } from './median.mjs';

const [what, label, rtt = '0'] = process.argv.slice(2);
if (!what || !label) throw new Error('usage: node tests/bench/page.mjs default|MODEL_DIR LABEL [RTT_MS]');
/** Fresh profiles, each visited three times: five, as a visit's time moves by ±40 ms here. */
const PROFILES = 5;

const site = await staticServer();
site.delay = Number(rtt);
const hub = what === 'default' ? null : await mockHub({ repos: { 'local/model': resolve(what) } });
const path = hub ? `/?model=local/model&hub=${encodeURIComponent(hub.url)}` : '/';
const base = hub ? `${hub.url}/local/model/resolve/main/` : `${site.url}/models/default/`;

/** One visit in `context`: seconds from navigation to the widget's model being ready, and the
 * WebAssembly build the worker ran. Returns the page too. The page says when itself: waiting
 * with a locator would put Playwright's injected script (parsed and run on the page's main
 * thread, about 17 ms here) and its polling inside the time measured. */
async function visit(context) {
  const p = await context.newPage();
  let told;
  const readyAt = new Promise((resolve) => { told = resolve; });
  await p.exposeBinding('botReadyAt', (_, ms) => told(ms));
  await p.addInitScript(() => {
    // The event, as the widget sends it, timed from this document's navigation.
    addEventListener('bot-ready', () => self.botReadyAt(performance.now()), { capture: true, once: true });
  });
  await p.goto(site.url + path);
  let timer;
  const ms = await Promise.race([readyAt, new Promise((resolve) => { timer = setTimeout(resolve, 120000, null); })]);
  clearTimeout(timer);
  if (ms === null) {
    // Not ready in time: fails with what the widget's status line says.
    await ready(p, 1);
    throw new Error('the widget is ready but sent no bot-ready event');
  }
  const [build, isolated] = await p.evaluate(() => [document.querySelector('bot-widget').dataset.build, self.crossOriginIsolated]);
  return { p, seconds: ms / 1000, build, isolated };
}

const runs = [];
try {
  for (let i = 0; i < PROFILES; i++) {
    const context = await profileContext();
    const cold = await visit(context);
    await serviceWorkerReady(cold.p);
    await kept(cold.p, base, 120000);
    // As a visitor who stayed a moment: the threaded build the next visit runs is cached too
    // (the service worker fetches it once the model is ready).
    await until(cold.p, () => caches.match(new URL('pkg-threads/botcard_bg.wasm', location.href).href).then(Boolean), undefined, 120000);
    await cold.p.close();
    const second = await visit(context);
    await second.p.close();
    const third = await visit(context);
    await third.p.close();
    await context.close();
    runs.push({ cold, second, third });
  }
} finally {
  await site.close();
  await hub?.close();
}
const mid = (k) => median(runs.map((r) => r[k].seconds));
console.log(JSON.stringify({
  engine: 'botcard page', model: label, host_rtt_ms: site.delay,
  build_cold: runs[0].cold.build, build_cached: runs[0].second.build, isolated_cached: runs[0].second.isolated,
  ready_cold_s: mid('cold'), ready_cached_s: mid('second'), ready_cached_again_s: mid('third'),
  visits: runs.map((r) => [r.cold.seconds, r.second.seconds, r.third.seconds]),
}));
