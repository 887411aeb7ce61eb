// "Create your own bot" (?create) in headless Chromium: an X archive given by its control or
// dropped on the page shows the card of the bot-to-be at once, counted as the CLI counts, and
// nothing leaves the tab. The archives are made by tests/fixtures/make_archives.py.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, browser, page, shot, staticServer } from './helpers.mjs';

const ARCHIVES = join(ROOT, 'tests/fixtures/archives');
const expected = JSON.parse(readFileSync(join(ARCHIVES, 'expected.json'), 'utf8'));

let site, b;
before(async () => {
  site = await staticServer();
  b = await browser();
});
after(async () => {
  await b?.close();
  await site?.close();
});

/** The create view, with every request the page makes recorded. */
async function createPage() {
  const p = await page(b);
  p.sent = [];
  p.on('request', (r) => p.sent.push({ method: r.method(), url: r.url(), body: r.postDataBuffer()?.length ?? 0 }));
  await p.goto(`${site.url}/?create`);
  return p;
}

/** The data table as {row label: [cells]}. */
async function table(p) {
  const rows = await p.locator('.card-body table tr').evaluateAll((trs) => trs.map((tr) => [...tr.children].map((c) => c.textContent.trim())));
  return Object.fromEntries(rows.map(([label, ...cells]) => [label, cells]));
}

/** Drops `file` (bytes read here) on the page as a person would. */
async function drop(p, file) {
  const bytes = [...readFileSync(join(ARCHIVES, file))];
  const dataTransfer = await p.evaluateHandle(([name, bytes]) => {
    const dt = new DataTransfer();
    dt.items.add(new File([new Uint8Array(bytes)], name, { type: 'application/zip' }));
    return dt;
  }, [file, bytes]);
  await p.dispatchEvent('main', 'dragover', { dataTransfer });
  await p.dispatchEvent('main', 'drop', { dataTransfer });
}

/** The sentence `botcard train` ends with for `file`. */
function cliRefusal(file) {
  try {
    execFileSync(join(ROOT, 'target/release/botcard'), ['train', '--data', join(ARCHIVES, file), '--out', join(ROOT, 'target/e2e/never-written')], { stdio: 'pipe' });
  } catch (e) {
    return e.stderr.toString().trim().split('\n').at(-1).replace(/^botcard: /, '');
  }
  throw new Error(`botcard train accepted ${file}`);
}

test('an X archive given by its control shows the card with the right table, name, handle and picture, and is not uploaded', async () => {
  const p = await createPage();
  const want = expected['alice-archive.zip'];
  const link = p.getByRole('navigation').getByRole('link', { name: 'Create your own bot' });
  assert.equal(await link.getAttribute('aria-current'), 'page');
  await p.getByText('Your archive is read in this tab. Nothing is uploaded.').waitFor();

  const served = p.sent.length;
  await p.getByLabel(/archive/).setInputFiles(join(ARCHIVES, 'alice-archive.zip'));
  await p.locator('.card-head .names').filter({ hasText: want.name }).waitFor({ timeout: 30000 });
  assert.equal(await p.locator('.card-head .handle').textContent(), `@${want.handle}`);
  assert.equal(await p.locator('.card-head .badge').textContent(), '🤖 AI BOT 🤖');
  assert.deepEqual(await table(p), {
    Data: [want.name],
    'Tweets downloaded': [String(want.downloaded)],
    Retweets: [String(want.retweets)],
    'Short tweets': [String(want.short)],
    'Tweets kept': [String(want.kept)],
  });
  // The picture is the archive's own (8 × 8), shown from the tab, not fetched from X.
  const avatar = p.getByRole('img', { name: want.name });
  assert.match(await avatar.getAttribute('src'), /^blob:/);
  assert.equal(await avatar.evaluate((img) => img.complete && img.naturalWidth), 8);
  await p.getByRole('status').filter({ hasText: `${want.kept} posts to learn from, read in this tab.` }).waitFor();
  assert.equal(await p.title(), `${want.name} · botcard`);

  // Reading the archive asked nothing of any server, and nothing was ever sent.
  assert.deepEqual(p.sent.slice(served).filter((r) => !r.url.startsWith(`${site.url}/`) || !/\.(js|wasm)(\?|$)/.test(r.url)), []);
  assert.deepEqual(p.sent.filter((r) => r.method !== 'GET' || r.body), []);
  assert.deepEqual(p.errors, []);
  await shot(p, 'create-archive');
  await p.context().close();
});

test('an archive dropped on the page is read too, and too little text gets the CLI\'s sentence', async () => {
  const p = await createPage();
  const want = expected['tiny-archive.zip'];
  await drop(p, 'tiny-archive.zip');
  await p.locator('.card-head .names').filter({ hasText: want.name }).waitFor({ timeout: 30000 });
  assert.equal(await p.locator('.card-head .handle').textContent(), `@${want.handle}`);
  assert.deepEqual((await table(p))['Tweets kept'], [String(want.kept)]);
  // No picture in this archive: initials.
  assert.equal(await p.getByRole('img', { name: want.name }).textContent(), 'TP');
  const sentence = cliRefusal('tiny-archive.zip');
  assert.match(sentence, /^only \d+ characters of posts are left after cleaning/);
  const status = p.getByRole('status');
  assert.equal(await status.textContent(), `O${sentence.slice(1)}.`);
  await shot(p, 'create-too-little');

  // A file that is not an archive says so, and the next archive replaces it.
  await p.getByLabel(/archive/).setInputFiles({ name: 'notes.zip', mimeType: 'application/zip', buffer: Buffer.from('PK\x03\x04 not really a zip') });
  await status.filter({ hasText: /^notes\.zip: not a zip file/ }).waitFor({ timeout: 30000 });
  await drop(p, 'alice-archive.zip');
  await p.locator('.card-head .names').filter({ hasText: expected['alice-archive.zip'].name }).waitFor({ timeout: 30000 });
  await status.filter({ hasText: /posts to learn from/ }).waitFor();
  assert.deepEqual(p.errors, []);
  await p.context().close();
});

test('a bare JSON Lines file of posts is read too, named after the file', async () => {
  const p = await createPage();
  const lines = Array.from({ length: 200 }, (_, i) => JSON.stringify({ full_text: `Post number ${i} is about the weather in the mountains today` }));
  lines.push(JSON.stringify({ full_text: 'RT @someone: not mine' }), JSON.stringify({ full_text: 'ok' }));
  await p.getByLabel(/archive/).setInputFiles({ name: 'marta.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(lines.join('\n')) });
  await p.locator('.card-head .names').filter({ hasText: 'marta' }).waitFor({ timeout: 30000 });
  assert.deepEqual(await table(p), {
    Data: ['marta'], 'Tweets downloaded': ['202'], Retweets: ['1'], 'Short tweets': ['1'], 'Tweets kept': ['200'],
  });
  await p.getByRole('status').filter({ hasText: '200 posts to learn from' }).waitFor();
  await p.getByRole('button', { name: 'Train my bot' }).waitFor();
  await p.context().close();
});

test('a huggingtweets card\'s "Create your own bot" link leads to the create view', async () => {
  const p = await page(b);
  await p.goto(`${site.url}/?model=huggingtweets/joebiden`);
  await p.locator('.card-body').getByRole('link', { name: 'the demo' }).click();
  await p.getByRole('heading', { name: 'Create your own bot' }).waitFor({ timeout: 30000 });
  assert.equal(new URL(p.url()).search, '?create');
  await p.getByLabel(/archive/).waitFor();
  await p.context().close();
});
