// The three WebAssembly builds on a plain static host: a first visit runs www/pkg-relaxed/
// (Chromium has relaxed-simd); the service worker makes the page cross-origin isolated from the
// second visit, and the worker then runs www/pkg-threads/; where neither starts, www/pkg/ runs.
// All three write the same text for the same seed as the CLI.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT, browser, compute, page, ready, shot, staticServer, serviceWorkerReady, until } from './helpers.mjs';

let site, b;
before(async () => { site = await staticServer(); b = await browser(); });
after(async () => { await b.close(); await site.close(); });

const URL_QUERY = '?seed=11&num_return_sequences=2&dtype=q8_0';

/** The CLI's samples for the same settings. */
function cliTexts() {
  const bin = join(ROOT, 'target/release/botcard');
  const cli = JSON.parse(execFileSync(bin, ['generate', '--model', join(ROOT, 'www/models/default'), '--prompt', 'My dream is',
    '--seed', '11', '--num-return-sequences', '2', '--dtype', 'q8_0', '--json']).toString());
  return cli.sequences.map((s) => 'My dream is' + s.text);
}

test('the threaded build writes the same text as the single-threaded one and the CLI', async () => {
  const p = await page(b);
  const url = `${site.url}/${URL_QUERY}`;
  await p.goto(url);
  assert.equal(await p.evaluate(() => self.crossOriginIsolated), false, 'a first visit is not isolated');
  const single = await compute(p);
  assert.doesNotMatch(single.status, /threads/);
  assert.equal(single.build, 'pkg-relaxed');
  await serviceWorkerReady(p);
  await p.goto(url);
  assert.equal(await p.evaluate(() => self.crossOriginIsolated), true, 'the service worker isolates the page');
  const threaded = await compute(p);
  assert.match(threaded.status, /on \d+ threads/);
  assert.equal(threaded.build, 'pkg-threads');
  assert.deepEqual(threaded.texts, single.texts);
  assert.deepEqual(threaded.texts, cliTexts());
  await shot(p, 'threaded');
  await p.context().close();
});

test('once a first visit\'s model is ready, the threaded build is cached ahead: the isolated second visit downloads none of it', async () => {
  const p = await page(b);
  await p.goto(`${site.url}/`);
  await ready(p);
  await serviceWorkerReady(p);
  // The service worker caches it after the page asks (on the widget's bot-ready), one file
  // after the other: every one of them, not only the wasm (the rayon snippet comes after it).
  await until(p, async () => {
    await import(new URL('version.js', location.href));
    const files = Object.keys(self.BOTCARD_BUILD.lazy).filter((f) => f.startsWith('pkg-threads/'));
    for (const name of await caches.keys()) {
      if (!name.startsWith('botcard-build-')) continue;
      const cache = await caches.open(name);
      if ((await Promise.all(files.map((f) => cache.match(new URL(f, location.href))))).every(Boolean)) return true;
    }
    return false;
  });
  const before = site.requests.length;
  await p.goto(`${site.url}/`);
  await ready(p);
  assert.equal(await p.locator('bot-widget').getAttribute('data-build'), 'pkg-threads');
  assert.deepEqual(site.requests.slice(before).filter((r) => r.includes('pkg-threads/')), []);
  await p.context().close();
});

test('where the relaxed-simd builds do not start, the plain build writes the same text', async () => {
  // As in a browser without relaxed-simd (or with a broken deploy of those builds); no service
  // worker, so that every request meets the route.
  const context = await b.newContext({ serviceWorkers: 'block' });
  await context.route(/\/pkg-(relaxed|threads)\//, (route) => route.fulfill({ status: 404, body: 'gone' }));
  const p = await context.newPage();
  await p.goto(`${site.url}/${URL_QUERY}`);
  const plain = await compute(p);
  assert.equal(plain.build, 'pkg');
  assert.deepEqual(plain.texts, cliTexts());
  await p.context().close();
});
