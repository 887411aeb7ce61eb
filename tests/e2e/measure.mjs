// Measures a model in the tab: load time (download + wasm load) and greedy decoding speed.
//   node tests/e2e/measure.mjs MODEL_DIR [NEW_TOKENS]
// Not a test (no timing belongs in tests); prints one JSON line.
import { resolve } from 'node:path';
import { browser, mockHub, page, ready, staticServer } from './helpers.mjs';

const dir = resolve(process.argv[2]);
const n = process.argv[3] || '64';
const site = await staticServer();
const hub = await mockHub({ repos: { 'local/model': dir } });
const b = await browser();
try {
  const p = await page(b);
  const q = new URLSearchParams({ model: 'local/model', hub: hub.url, do_sample: 'false', max_new_tokens: n, min_new_tokens: n });
  const t0 = Date.now();
  await p.goto(`${site.url}/?${q}`);
  await ready(p, 600000);
  const loadSeconds = (Date.now() - t0) / 1000;
  await p.getByRole('button', { name: 'Compute' }).click();
  const status = p.locator('.bot-widget .status').filter({ hasText: /tokens\/s/ });
  await status.waitFor({ timeout: 600000 });
  const text = await status.textContent();
  const tps = Number(text.match(/at ([\d.]+) tokens\/s/)[1]);
  console.log(JSON.stringify({ model: dir, load_seconds: loadSeconds, new_tokens: Number(n), tokens_per_second: tps }));
} finally {
  await b.close();
  await site.close();
  await hub.close();
}
