// The multi-threaded build: a plain static host, the service worker makes the page cross-origin
// isolated from its second visit, and the worker then runs www/pkg-threads/ — writing the same
// text for the same seed as the single-threaded build and the CLI.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT, browser, page, ready, shot, staticServer } from './helpers.mjs';

let site, b;
before(async () => { site = await staticServer(); b = await browser(); });
after(async () => { await b.close(); await site.close(); });

/** Computes on the page's default bot and returns the samples and the status line. */
async function compute(p) {
  await ready(p);
  await p.getByRole('button', { name: 'Compute' }).click();
  const status = p.locator('.bot-widget .status').filter({ hasText: /tokens\/s/ });
  await status.waitFor({ timeout: 60000 });
  return { texts: await p.locator('ol[aria-label="Generated samples"] li').allTextContents(), status: await status.textContent() };
}

test('the threaded build writes the same text as the single-threaded one and the CLI', async () => {
  const p = await page(b);
  const url = `${site.url}/?seed=11&num_return_sequences=2&dtype=q8_0`;
  await p.goto(url);
  assert.equal(await p.evaluate(() => self.crossOriginIsolated), false, 'a first visit is not isolated');
  const single = await compute(p);
  assert.doesNotMatch(single.status, /threads/);
  await p.evaluate(() => navigator.serviceWorker.ready);
  await p.goto(url);
  assert.equal(await p.evaluate(() => self.crossOriginIsolated), true, 'the service worker isolates the page');
  const threaded = await compute(p);
  assert.match(threaded.status, /on \d+ threads/);
  assert.deepEqual(threaded.texts, single.texts);
  const bin = join(ROOT, 'target/release/botcard');
  const cli = JSON.parse(execFileSync(bin, ['generate', '--model', join(ROOT, 'www/models/default'), '--prompt', 'My dream is',
    '--seed', '11', '--num-return-sequences', '2', '--dtype', 'q8_0', '--json']).toString());
  assert.deepEqual(threaded.texts, cli.sequences.map((s) => 'My dream is' + s.text));
  await shot(p, 'threaded');
  await p.context().close();
});
