// Training a bot in the tab (?create): a short run on the fixture X archive finishes, lowers the
// held-out loss, and gives a bot that is kept in the browser (reload, offline), writes text, and
// downloads as a zip that the CLI loads with the same greedy text; the same archive and seed
// make the same bot with `botcard train`; Stop leaves a usable page.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, browser, compute, page, ready, serviceWorkerReady, shot, staticServer } from './helpers.mjs';

const ARCHIVE = join(ROOT, 'tests/fixtures/archives/alice-archive.zip');
const BIN = join(ROOT, 'target/release/botcard');
const STEPS = 12;

let site, b, tmp;
before(async () => {
  site = await staticServer();
  b = await browser();
  tmp = mkdtempSync(join(tmpdir(), 'botcard-train-'));
});
after(async () => {
  await b?.close();
  await site?.close();
  rmSync(tmp, { recursive: true, force: true });
});

function cli(args) {
  return execFileSync(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

/** Greedy text of a model folder from the CLI. */
function cliGreedy(dir, n) {
  const v = JSON.parse(cli(['generate', '--model', dir, '--prompt', 'My dream is', '--do-sample', 'false', '--max-new-tokens', String(n), '--json']));
  return v.sequences[0].text;
}

/** Log-probabilities of a text's tokens under a model folder, from the CLI (f32). */
function cliScore(dir, text) {
  return JSON.parse(cli(['score', '--model', dir, '--dtype', 'f32', '--text', text, '--json'])).logprobs;
}

/** Unzips `zip` into a new folder and returns the bot's folder in it. */
function unzip(zip) {
  const out = mkdtempSync(join(tmp, 'zip-'));
  execFileSync('python3', ['-m', 'zipfile', '-e', zip, out]);
  const [folder] = execFileSync('ls', [out]).toString().trim().split('\n');
  return join(out, folder);
}

/** Picks the archive on ?create&steps=N and starts training. */
async function startTraining(p, steps) {
  const url = `${site.url}/?create${steps ? `&steps=${steps}` : ''}`;
  if (p.url() !== url) await p.goto(url);
  await p.getByLabel(/archive/).setInputFiles(ARCHIVE);
  await p.getByRole('button', { name: 'Train my bot' }).click();
}

test('a short training run in the tab makes a bot that is kept, writes, and downloads as a folder the CLI loads', async () => {
  const p = await page(b);
  const seen = [];
  p.on('console', (m) => { if (m.type() === 'error') seen.push(m.text()); });
  await startTraining(p, STEPS);
  // Progress: step, loss, tokens/s and time left, then the bot's own page.
  const status = p.getByRole('region', { name: 'Training' }).getByRole('status');
  await status.filter({ hasText: new RegExp(`^Step \\d+ of ${STEPS} · loss \\d+\\.\\d\\d · \\d+ tokens/s · \\d+:\\d\\d left$`) }).waitFor({ timeout: 120000 });
  await shot(p, 'train-progress');
  await p.waitForURL(/\?mine=/, { timeout: 300000 });
  const id = new URL(p.url()).searchParams.get('mine');
  await ready(p, 60000);
  assert.equal(await p.locator('.card-head .names').textContent(), 'Alice Liddell 🐇');
  assert.equal(await p.locator('.card-head .handle').textContent(), '@alice_in_data');
  // The card's figures: held out perplexity below the default bot's on the same posts.
  const figures = Object.fromEntries(await p.locator('.card-body table').nth(1).locator('tr').evaluateAll(
    (trs) => trs.map((tr) => [...tr.children].map((c) => c.textContent.trim()))));
  assert.equal(figures.Steps, String(STEPS));
  const after = Number(figures['Held-out perplexity']);
  const start = Number(figures['Held-out perplexity before training']);
  assert.ok(after < start, `held-out perplexity ${after} after, ${start} before`);
  assert.match(await p.locator('.bot-widget .status').textContent(), /^Alice Liddell 🐇 is ready/);
  // The archive's picture, kept with the bot (the card's X address is not reachable here).
  const avatar = p.getByRole('img', { name: 'Alice Liddell 🐇' });
  assert.match(await avatar.getAttribute('src'), /^blob:/);
  assert.equal(await avatar.evaluate((img) => img.complete && img.naturalWidth), 8);
  await shot(p, 'train-bot');

  // Greedy text in the tab, and from the downloaded zip with the CLI.
  await p.goto(`${site.url}/?mine=${encodeURIComponent(id)}&do_sample=false&max_new_tokens=16`);
  const tab = (await compute(p)).texts[0];
  const [download] = await Promise.all([p.waitForEvent('download'), p.getByRole('button', { name: 'Download (zip)' }).click()]);
  assert.equal(download.suggestedFilename(), 'alice_in_data.zip');
  const zip = join(tmp, 'bot.zip');
  await download.saveAs(zip);
  const dir = unzip(zip);
  assert.deepEqual(execFileSync('ls', [dir]).toString().trim().split('\n').sort(), ['README.md', 'config.json', 'model.safetensors', 'tokenizer.json']);
  assert.equal(tab, `My dream is${cliGreedy(dir, 16)}`);

  // Seeded: `botcard train` with the tab's recipe and seed makes the same bot.
  const cliBot = join(tmp, 'cli-bot');
  cli(['train', '--data', ARCHIVE, '--init', join(ROOT, 'www/models/default'), '--out', cliBot, '--steps', String(STEPS),
    '--batch-size', '8', '--block-size', '128', '--lr', '1e-3', '--seed', '0', '--dtype', 'f16']);
  for (const f of ['config.json', 'tokenizer.json']) {
    assert.ok(readFileSync(join(dir, f)).equals(readFileSync(join(cliBot, f))), `${f} is identical`);
  }
  // Each card says where its bot was made.
  assert.match(readFileSync(join(dir, 'README.md'), 'utf8'), /^I was made with botcard in a web browser, /m);
  assert.match(readFileSync(join(cliBot, 'README.md'), 'utf8'), /^I was made with botcard \(`botcard train`\), /m);
  const text = '<|endoftext|>The Hatter argued with me about the tea party and nobody had any tea left<|endoftext|>';
  const [a, c] = [cliScore(dir, text), cliScore(cliBot, text)];
  const most = Math.max(...a.map((x, i) => Math.abs(x - c[i])));
  console.log(`tab vs CLI bot: max |Δ logprob| ${most.toExponential(2)} over ${a.length} tokens; safetensors identical: ${readFileSync(join(dir, 'model.safetensors')).equals(readFileSync(join(cliBot, 'model.safetensors')))}`);
  assert.ok(most < 1e-3, `max |Δ logprob| ${most}`);

  // Kept: listed on the create view, and there after a reload and offline.
  await serviceWorkerReady(p);
  await p.goto(`${site.url}/?create`);
  const link = p.getByRole('region', { name: 'Your bots' }).getByRole('link', { name: 'Alice Liddell 🐇 (@alice_in_data)' });
  await link.waitFor({ timeout: 30000 });
  await p.context().setOffline(true);
  await link.click();
  await ready(p, 60000);
  assert.equal(await p.locator('.card-head .handle').textContent(), '@alice_in_data');
  assert.equal((await compute(p)).texts.length, 1);
  await p.context().setOffline(false);

  // Deleted: gone from the list and from its address.
  await p.goto(`${site.url}/?create`);
  await link.waitFor({ timeout: 30000 });
  p.once('dialog', (d) => d.accept());
  await p.getByRole('button', { name: 'Delete Alice Liddell 🐇 (@alice_in_data)' }).click();
  await p.getByRole('region', { name: 'Your bots' }).waitFor({ state: 'hidden' });
  await p.goto(`${site.url}/?mine=${encodeURIComponent(id)}`);
  await p.getByText('This bot is not kept in this browser').waitFor({ timeout: 30000 });
  // Nor is its card: the worker keeps only the parses of cards the page asks it to (a hub's).
  assert.equal(await p.evaluate(async () => ((await caches.has('botcard-cards-v1'))
    ? (await (await caches.open('botcard-cards-v1')).keys()).length : 0)), 0);
  assert.deepEqual(p.errors, []);
  await p.context().close();
});

test('Stop during training leaves a usable page that can train again (threaded build), past a damaged cache', async () => {
  const p = await page(b);
  // The second visit: the service worker makes the page cross-origin isolated, and the worker
  // runs the threaded build.
  await p.goto(`${site.url}/?create`);
  await serviceWorkerReady(p);
  await p.reload();
  assert.equal(await p.evaluate(() => self.crossOriginIsolated), true);
  await p.evaluate(() => {
    self.longest = 0;
    new PerformanceObserver((l) => { for (const e of l.getEntries()) self.longest = Math.max(self.longest, e.duration); })
      .observe({ type: 'longtask', buffered: true });
  });
  await startTraining(p);
  const region = p.getByRole('region', { name: 'Training' });
  const status = region.getByRole('status');
  await status.filter({ hasText: /^Step 2 of \d+/ }).waitFor({ timeout: 120000 });
  // The page is not held up by training: no task on its thread took more than 200 ms, and a
  // file given meanwhile is turned away with a sentence, not lost in the middle of a run.
  assert.ok(await p.evaluate(() => self.longest) < 200, `a ${await p.evaluate(() => self.longest)} ms task`);
  await p.getByLabel(/archive/).setInputFiles(join(ROOT, 'tests/fixtures/archives/tiny-archive.zip'));
  await p.getByRole('region', { name: 'Your posts' }).getByRole('status')
    .filter({ hasText: 'Your bot is training: stop it to read tiny-archive.zip instead.' }).waitFor();
  await region.getByRole('button', { name: 'Stop' }).click();
  await status.filter({ hasText: /^Stopped\./ }).waitFor({ timeout: 30000 });
  // No step comes after Stop.
  await p.waitForTimeout(1500);
  assert.match(await status.textContent(), /^Stopped\./);
  assert.ok(await region.getByRole('button', { name: 'Train my bot' }).isEnabled());
  assert.ok(await region.getByRole('button', { name: 'Stop' }).isHidden());
  // The page still works: training again reports progress, and Stop ends it again. The default
  // bot's cached weights are damaged first: they are dropped and downloaded again.
  await p.evaluate(async () => {
    const cache = await caches.open('botcard-models-v1');
    const url = new URL('models/default/model.safetensors', location.href).href;
    const res = await cache.match(url);
    const bytes = new Uint8Array(await res.arrayBuffer());
    bytes[bytes.length - 1] ^= 0xff;
    await cache.put(url, new Response(bytes, { headers: res.headers }));
  });
  await region.getByRole('button', { name: 'Train my bot' }).click();
  await status.filter({ hasText: /^Step 1 of \d+/ }).waitFor({ timeout: 120000 });
  await region.getByRole('button', { name: 'Stop' }).click();
  await status.filter({ hasText: /^Stopped\./ }).waitFor({ timeout: 30000 });
  assert.deepEqual(p.errors, []);
  await p.context().close();
});
