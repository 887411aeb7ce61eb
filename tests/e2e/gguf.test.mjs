// A hub folder whose weights are a pre-quantized model.gguf (`botcard convert --dtype
// q8_0|q4k|q4_0`): the widget loads it from the hub like any other, holds the weights as the file
// stores them, and writes exactly the CLI's text (a q8_0 file also that of the f32 checkpoint
// quantized at load).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, browser, mockHub, page, shot, staticServer } from './helpers.mjs';

const BIN = join(ROOT, 'target/release/botcard');
const DEFAULT = join(ROOT, 'www/models/default');
const WORK = join(ROOT, 'target/e2e-gguf');
const SETTINGS = ['--seed', '11', '--num-return-sequences', '2', '--max-new-tokens', '30'];

let site, hub, b;

/** `botcard generate --json` on folder `dir`, prompt "My dream is". */
function cli(dir, args = []) {
  const out = JSON.parse(execFileSync(BIN, ['generate', '--model', dir, '--prompt', 'My dream is', ...SETTINGS, ...args, '--json']).toString());
  return out.sequences.map((s) => 'My dream is' + s.text);
}

before(async () => {
  rmSync(WORK, { recursive: true, force: true });
  for (const t of ['q8_0', 'q4k', 'q4_0']) {
    mkdirSync(WORK, { recursive: true });
    execFileSync(BIN, ['convert', '--model', DEFAULT, '--out', join(WORK, t), '--dtype', t], { stdio: 'ignore' });
  }
  hub = await mockHub({ repos: { 'local/q8': join(WORK, 'q8_0'), 'local/q4k': join(WORK, 'q4k'), 'local/q40': join(WORK, 'q4_0') } });
  const widget = (id, model) => `<bot-widget id="${id}" model="${model}" hub="${hub.url}" seed="11"
    num_return_sequences="2" max_new_tokens="30"></bot-widget>`;
  site = await staticServer({
    extraPages: {
      '/gguf.html': () => `<!doctype html><meta charset="utf-8"><title>GGUF bots</title>
        <script type="module" src="/widget.js"></script>
        ${widget('q8', 'local/q8')} ${widget('q4k', 'local/q4k')} ${widget('q40', 'local/q40')}`,
    },
  });
  b = await browser();
});

after(async () => {
  await b?.close();
  await site?.close();
  await hub?.close();
});

const texts = (p, w) => p.locator(`#${w} ol[aria-label="Generated samples"] li`).allTextContents();

async function run(p, w) {
  await p.locator(`#${w} .status`).filter({ hasText: /is ready/ }).waitFor({ timeout: 60000 });
  await p.locator(`#${w}`).getByRole('button', { name: 'Compute' }).click();
  await p.locator(`#${w} .status`).filter({ hasText: /^Done: .*tokens\/s/ }).waitFor({ timeout: 60000 });
  return { texts: await texts(p, w), weights: await p.locator(`#${w}`).getAttribute('data-weights') };
}

test('a model.gguf on the hub loads in the widget and keeps its format; q8_0, q4k and q4_0 write the CLI text', async () => {
  const p = await page(b);
  await p.goto(`${site.url}/gguf.html`);
  const q8 = await run(p, 'q8');
  assert.equal(q8.weights, 'q8_0');
  const expected = cli(join(WORK, 'q8_0'));
  assert.deepEqual(q8.texts, expected);
  assert.deepEqual(cli(DEFAULT, ['--dtype', 'q8_0']), expected, 'the same as quantizing the checkpoint at load');
  const q4 = await run(p, 'q4k');
  assert.equal(q4.weights, 'q4k');
  assert.deepEqual(q4.texts, cli(join(WORK, 'q4k')));
  assert.notDeepEqual(q4.texts, expected, 'q4k is not q8_0 under another name');
  const q40 = await run(p, 'q40');
  assert.equal(q40.weights, 'q4_0');
  assert.deepEqual(q40.texts, cli(join(WORK, 'q4_0')));
  assert.notDeepEqual(q40.texts, q4.texts, 'q4_0 is not q4k under another name');
  await shot(p, 'gguf');
  assert.deepEqual(p.errors, []);
  await p.context().close();
});
