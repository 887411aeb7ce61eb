// Training a bot in the tab, timed: the real page (?create) in headless Chromium, served as a
// plain static site, trains on an X archive with the tab's recipe and prints one JSON line with
// the training time, tokens/s and the held-out perplexities the bot's card reports. Not a test.
//   node tests/bench/train.mjs ARCHIVE.zip [STEPS]
// A 3,000-post archive from real writing (one author's commit subjects):
//   python3 tests/fixtures/make_archives.py --from-git <repo.git> --author <name> --posts 3000 --out a.zip
import { resolve } from 'node:path';
import { browser, page, staticServer } from '../e2e/helpers.mjs';

const archive = resolve(process.argv[2]);
const steps = process.argv[3];
const site = await staticServer();
const b = await browser();
try {
  const p = await page(b);
  await p.goto(`${site.url}/?create${steps ? `&steps=${steps}` : ''}`);
  await p.getByLabel(/archive/).setInputFiles(archive);
  const train = p.getByRole('button', { name: 'Train my bot' });
  await train.waitFor();
  const t0 = Date.now();
  await train.click();
  const status = p.getByRole('region', { name: 'Training' }).getByRole('status');
  // The last step's line has the training speed (tokens/s) the page showed.
  let last = '';
  const poll = setInterval(async () => {
    const text = await status.textContent().catch(() => '');
    if (text.startsWith('Step')) last = text;
  }, 500);
  await p.waitForURL(/\?mine=/, { timeout: 3600000 });
  const wall = (Date.now() - t0) / 1000;
  clearInterval(poll);
  await p.locator('.card-body table').nth(1).waitFor();
  const figures = Object.fromEntries(await p.locator('.card-body table').nth(1).locator('tr').evaluateAll(
    (trs) => trs.map((tr) => [...tr.children].map((c) => c.textContent.trim()))));
  console.log(JSON.stringify({
    archive, wall_seconds: wall, last_step: last, ...figures,
  }));
} finally {
  await b.close();
  await site.close();
}
