// People press Stop and Compute in a hurry and switch models: 100 rapid Stop/Compute cycles and
// 20 model switches in one tab. No Compute waits forever (a stuck worker), no text of a stopped
// run shows up later, the last run writes exactly what a fresh tab writes, and the tab's memory
// (its renderer processes' resident size, after garbage collection) ends within 10% of what it
// was after the first run.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, mockHub, shot, staticServer, ready } from './helpers.mjs';

let site, hub, b, renderers;
const processes = () => new Set(readdirSync('/proc').filter((p) => /^\d+$/.test(p)));
before(async () => {
  site = await staticServer();
  hub = await mockHub();
  const old = processes();
  // gc() in the page and its worker, so that what is measured is what is still held.
  b = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: [...CHROMIUM_ARGS, '--js-flags=--expose-gc'] });
  renderers = () => [...processes()].filter((pid) => !old.has(pid)).filter((pid) => {
    try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('--type=renderer'); } catch { return false; }
  });
});
after(async () => { await b?.close(); await site?.close(); await hub?.close(); });

/** MB resident in this browser's renderer processes after garbage collection in `p` and its
 * worker. */
async function residentMB(p) {
  for (let i = 0; i < 3; i++) {
    await p.evaluate(() => gc());
    // (Not the threaded build's helper workers: they wait for work and cannot be asked.)
    for (const w of p.workers().filter((w) => !w.url().startsWith('blob:'))) await w.evaluate(() => gc());
    await p.waitForTimeout(300);
  }
  let kb = 0;
  for (const pid of renderers()) {
    try { kb += Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/)[1]); } catch { /* gone */ }
  }
  return kb / 1024;
}

/** The models switched between: the default bot and three tiny ones from the hub. */
const MODELS = [[null, null], ['botcard/tiny-st', 'hub'], ['botcard/tiny-2021', 'hub'], ['botcard/relu-st', 'hub']];
const SEED = { do_sample: 'true', seed: '5', max_new_tokens: '40', num_return_sequences: '2' };

/** Points the page's widget at `model` (null: the default bot) and waits until it is ready. */
async function use(p, [model, fromHub]) {
  await p.evaluate(([model, hubUrl]) => {
    const w = document.querySelector('bot-widget');
    if (hubUrl) w.setAttribute('hub', hubUrl); else w.removeAttribute('hub');
    if (model) w.setAttribute('model', model); else w.removeAttribute('model');
  }, [model, fromHub && hub.url]);
  await ready(p);
}

/** Runs Compute to the end and returns the samples. */
async function computeAll(p) {
  const done = p.evaluate(() => new Promise((r) => {
    document.querySelector('bot-widget').addEventListener('bot-done', (e) => r(e.detail.stopped), { once: true });
    setTimeout(() => r('no bot-done within 30 s'), 30000);
  }));
  await p.getByRole('button', { name: 'Compute' }).click();
  assert.equal(await done, false, await p.locator('.bot-widget .status').textContent());
  return p.locator('ol[aria-label="Generated samples"] li').allTextContents();
}

test('100 Stop/Compute cycles and 20 model switches leave a working tab and its memory', async () => {
  const context = await b.newContext();
  await context.route(/^https?:\/\/(?!127\.0\.0\.1)/, (r) => r.abort('internetdisconnected'));
  const query = new URLSearchParams(SEED).toString();

  // What a fresh tab writes with each model.
  const expected = [];
  const fresh = await context.newPage();
  await fresh.goto(`${site.url}/?${query}`);
  for (const m of MODELS) { await use(fresh, m); expected.push(await computeAll(fresh)); }
  await fresh.close();

  const p = await context.newPage();
  const errors = [];
  p.on('pageerror', (e) => errors.push(String(e)));
  await p.goto(`${site.url}/?${query}`);
  await ready(p);
  assert.deepEqual(await computeAll(p), expected[0]);
  const first = await residentMB(p);

  // How the cycles' runs ended.
  await p.evaluate(() => {
    self.ends = { stopped: 0, done: 0 };
    document.querySelector('bot-widget').addEventListener('bot-done', (e) => self.ends[e.detail.stopped ? 'stopped' : 'done']++);
  });
  const compute = p.getByRole('button', { name: 'Compute' });
  const stop = p.getByRole('button', { name: 'Stop' });
  const status = p.locator('.bot-widget .status');
  let cycles = 0;
  let switches = 0;
  for (let round = 0; round < 20; round++) {
    for (let i = 0; i < 5; i++, cycles++) {
      // Compute waits (Playwright's click waits for the button to be enabled) until the last
      // stopped run has ended: a stuck worker fails here.
      await compute.click({ timeout: 20000 });
      await p.waitForTimeout((cycles * 7) % 40);
      // At once, enabled or not (disabled: the run ended first).
      await stop.click({ force: true });
    }
    await status.filter({ hasText: /^(Stopped|Done)/ }).waitFor({ timeout: 20000 });
    // Nothing of the stopped run comes in later.
    const after = await p.locator('ol[aria-label="Generated samples"] li').allTextContents();
    await p.waitForTimeout(200);
    assert.deepEqual(await p.locator('ol[aria-label="Generated samples"] li').allTextContents(), after);
    const m = (round + 1) % MODELS.length;
    await use(p, MODELS[m]);
    switches++;
    // A whole run on the new model writes what a fresh tab writes.
    assert.deepEqual(await computeAll(p), expected[m], `round ${round}`);
  }
  assert.equal(cycles, 100);
  assert.equal(switches, 20);
  // 20 switches end on the default bot again.
  assert.deepEqual(await computeAll(p), expected[0]);
  const last = await residentMB(p);
  const ends = await p.evaluate(() => self.ends);
  assert.ok(ends.stopped >= 50, `only ${ends.stopped} runs were stopped`);
  console.log(`soak: ${ends.stopped} runs stopped, ${ends.done} ran to the end; tab memory after the first run ${first.toFixed(0)} MB, after 100 Stop/Compute cycles and 20 model switches ${last.toFixed(0)} MB (${(100 * (last / first - 1)).toFixed(1)}%)`);
  assert.ok(last <= first * 1.1, `${last.toFixed(0)} MB after, ${first.toFixed(0)} MB at first`);
  assert.deepEqual(errors, []);
  await shot(p, 'soak');
  await context.close();
});
