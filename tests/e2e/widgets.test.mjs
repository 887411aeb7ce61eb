// <bot-widget> on other people's pages: several widgets with different models on one page share
// one worker without mixing their models or their Stop buttons, and a widget brings its own
// styles. Screenshots: target/e2e/*.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT, browser, mockHub, page, shot, staticServer } from './helpers.mjs';

let site, hub, b;
/** The held answers of the slow hub repo's config.json: {res, aborted}. */
const held = [];

before(async () => {
  hub = await mockHub({
    // A model whose config.json answers only when the test says so.
    repos: { 'botcard/slow': 'tests/fixtures/models/tiny-st' },
    handlers: {
      '/botcard/slow/resolve/main/config.json': (req, res) => {
        const h = { res, aborted: false };
        res.on('close', () => { if (!res.writableEnded) h.aborted = true; });
        held.push(h);
      },
    },
  });
  site = await staticServer({
    extraPages: {
      // Someone's blog post with two bots side by side: only the script and the elements.
      '/two-bots.html': () => `<!doctype html><meta charset="utf-8"><title>Two bots</title>
        <script type="module" src="/widget.js"></script>
        <h1>Two bots</h1>
        <bot-widget id="a" seed="7" num_return_sequences="2" max_new_tokens="40"></bot-widget>
        <bot-widget id="b" model="botcard/tiny-2021" hub="${hub.url}" seed="42" num_return_sequences="2"
          min_new_tokens="55" max_new_tokens="55"></bot-widget>`,
      // A page that points its widget at other models as it likes.
      '/switching.html': () => `<!doctype html><meta charset="utf-8"><title>Switching</title>
        <script type="module" src="/widget.js"></script>
        <bot-widget id="s" seed="7" num_return_sequences="2" max_new_tokens="40"></bot-widget>`,
      // A page whose own CSS would restyle any plain element.
      '/hostile-styles.html': () => `<!doctype html><meta charset="utf-8"><title>Styled page</title>
        <style>* { font-family: serif !important; } button { background: red; border-radius: 0; } ol { list-style: none; }</style>
        <script type="module" src="/widget.js"></script>
        <bot-widget prompt="Hello"></bot-widget>`,
    },
  });
  b = await browser();
});

after(async () => {
  await b?.close();
  await site?.close();
  await hub?.close();
});

/** `botcard generate --json` with the prompt "My dream is". */
function cli(model, args) {
  const bin = join(ROOT, 'target/release/botcard');
  const dir = model === 'default' ? join(ROOT, 'www/models/default') : join(ROOT, 'tests/fixtures/models', model);
  const out = JSON.parse(execFileSync(bin, ['generate', '--model', dir, '--prompt', 'My dream is', ...args, '--json']).toString());
  return out.sequences.map((s) => 'My dream is' + s.text);
}

const status = (p, w) => p.locator(`#${w} .status`);
const texts = (p, w) => p.locator(`#${w} ol[aria-label="Generated samples"] li`).allTextContents();
const done = (p, w) => status(p, w).filter({ hasText: /^Done: .*tokens\/s/ }).waitFor({ timeout: 120000 });

test('two widgets with different models on one page each write with their own model, in either order and at once', async () => {
  const expectA = cli('default', ['--seed', '7', '--num-return-sequences', '2', '--max-new-tokens', '40']);
  const expectB = cli('tiny-2021', ['--seed', '42', '--num-return-sequences', '2', '--min-new-tokens', '55', '--max-new-tokens', '55']);
  const p = await page(b);
  await p.goto(`${site.url}/two-bots.html`);
  for (const w of ['a', 'b']) await status(p, w).filter({ hasText: /is ready/ }).waitFor({ timeout: 60000 });
  assert.equal(await p.locator('#a').getByRole('textbox', { name: 'Prompt' }).inputValue(), 'My dream is');

  for (const order of [['a', 'b'], ['b', 'a']]) {
    // Both at once: the second Compute is pressed while the first widget is writing.
    for (const w of order) await p.locator(`#${w}`).getByRole('button', { name: 'Compute' }).click();
    await Promise.all([done(p, 'a'), done(p, 'b')]);
    assert.deepEqual(await texts(p, 'a'), expectA, `widget a (${order})`);
    assert.deepEqual(await texts(p, 'b'), expectB, `widget b (${order})`);
  }
  await shot(p, 'two-bots');
  assert.deepEqual(p.errors, []);
  await p.context().close();
});

test('Stop on one widget stops its generation and leaves the other running', async () => {
  const expectB = cli('tiny-2021', ['--seed', '42', '--num-return-sequences', '2', '--min-new-tokens', '55', '--max-new-tokens', '55']);
  const p = await page(b);
  await p.goto(`${site.url}/two-bots.html`);
  for (const w of ['a', 'b']) await status(p, w).filter({ hasText: /is ready/ }).waitFor({ timeout: 60000 });
  // A long job for a: 64 samples of 50 tokens.
  await p.locator('#a').getByText('Settings').click();
  for (const [name, v] of [['num_return_sequences', '64'], ['max_new_tokens', '50'], ['min_new_tokens', '50']]) {
    await p.locator(`#a input[name=${name}]`).fill(v);
  }
  await p.locator('#a').getByRole('button', { name: 'Compute' }).click();
  await p.locator('#b').getByRole('button', { name: 'Compute' }).click();
  // Both are writing: b has some text, a has some text.
  await p.waitForFunction(() => {
    const [a, b] = [...document.querySelectorAll('bot-widget')].map((w) => w.shadowRoot.querySelector('ol').textContent.length);
    return a > 64 * 'My dream is'.length && b > 2 * 'My dream is'.length;
  });
  await p.locator('#a').getByRole('button', { name: 'Stop' }).click();
  await status(p, 'a').filter({ hasText: /^Stopped: \d+ tokens/ }).waitFor({ timeout: 60000 });
  const stoppedAt = Number((await status(p, 'a').textContent()).match(/(\d+) tokens/)[1]);
  assert.ok(stoppedAt < 64 * 50, `a stopped early (${stoppedAt} tokens)`);
  // b was not stopped with a: it ends "Done" with all of its text, whenever it finishes.
  await done(p, 'b');
  assert.deepEqual(await texts(p, 'b'), expectB);
  await shot(p, 'two-bots-stop-one');
  await p.context().close();
});

test('a widget switched to another model while the first still loads shows and runs the last one asked for, and drops the first download', async () => {
  const expected = cli('default', ['--seed', '7', '--num-return-sequences', '2', '--max-new-tokens', '40']);
  const p = await page(b);
  await p.goto(`${site.url}/switching.html`);
  await status(p, 's').filter({ hasText: /is ready/ }).waitFor({ timeout: 60000 });
  // hub and model set one after the other, as a page script does: one load, of the slow model.
  await p.evaluate((hubUrl) => {
    const w = document.querySelector('bot-widget');
    w.setAttribute('hub', hubUrl);
    w.setAttribute('model', 'botcard/slow');
  }, hub.url);
  await status(p, 's').filter({ hasText: 'Loading botcard/slow' }).waitFor();
  for (let i = 0; i < 100 && held.length === 0; i++) await p.waitForTimeout(100);
  assert.equal(held.length, 1, 'the slow model was asked for once');
  // Back to the default bot, in a later task, while the slow model's config.json is unanswered.
  await p.evaluate(() => document.querySelector('bot-widget').removeAttribute('model'));
  await status(p, 's').filter({ hasText: /^The default bot is ready/ }).waitFor({ timeout: 60000 });
  // The worker dropped the download nobody waits for.
  for (let i = 0; i < 50 && !held[0].aborted; i++) await p.waitForTimeout(100);
  assert.ok(held[0].aborted, 'the slow download was dropped');
  // Whatever came of the first load says nothing now.
  await p.waitForTimeout(500);
  assert.match(await status(p, 's').textContent(), /^The default bot is ready/);
  await p.getByRole('button', { name: 'Compute' }).click();
  await done(p, 's');
  assert.deepEqual(await texts(p, 's'), expected);

  // The same while Compute waits for the slow model: it runs the model asked for last.
  await p.evaluate(() => document.querySelector('bot-widget').setAttribute('model', 'botcard/slow'));
  for (let i = 0; i < 100 && held.length < 2; i++) await p.waitForTimeout(100);
  assert.equal(held.length, 2);
  await p.getByRole('button', { name: 'Compute' }).click();
  await p.evaluate(() => document.querySelector('bot-widget').removeAttribute('model'));
  await done(p, 's');
  assert.deepEqual(await texts(p, 's'), expected);
  for (const h of held) if (!h.res.writableEnded) h.res.destroy();
  assert.deepEqual(p.errors, []);
  await p.context().close();
});

test('a widget on a page with its own CSS looks like the card page\'s widget', async () => {
  const look = async (url) => {
    const p = await page(b);
    await p.goto(url);
    await p.locator('bot-widget .status').filter({ hasText: /is ready/ }).waitFor({ timeout: 60000 });
    const style = await p.evaluate(() => {
      const root = document.querySelector('bot-widget').shadowRoot;
      const css = (sel, props) => {
        const s = getComputedStyle(root.querySelector(sel));
        return props.map((k) => s[k]);
      };
      return {
        box: css('.bot-widget', ['borderTopLeftRadius', 'borderTopWidth', 'display', 'fontFamily']),
        compute: css('.compute', ['fontWeight', 'borderTopLeftRadius', 'backgroundColor']),
        samples: css('.samples', ['listStyleType', 'whiteSpace']),
      };
    });
    return { p, style };
  };
  const card = await look(`${site.url}/`);
  const other = await look(`${site.url}/hostile-styles.html`);
  assert.equal(card.style.box[0], '8px', 'rounded box');
  assert.equal(card.style.compute[0], '700', 'bold Compute');
  assert.deepEqual(other.style.box, card.style.box, 'the page\'s font rule stays outside');
  assert.deepEqual(other.style.compute, card.style.compute, 'the page\'s button rules stay outside');
  assert.deepEqual(other.style.samples, card.style.samples);
  await shot(other.p, 'widget-on-styled-page');
  for (const x of [card, other]) await x.p.context().close();
});

test('the settings form is drawn from the model\'s settings as the library reports them', async () => {
  const p = await page(b);
  await p.goto(`${site.url}/?top_k=7&stop_at_newline=true&utm_source=blog`);
  await p.locator('bot-widget .status').filter({ hasText: /is ready/ }).waitFor({ timeout: 60000 });
  await p.locator('bot-widget').getByText('Settings', { exact: true }).click();
  const w = p.locator('bot-widget');
  // Every setting the library marks for the form, with the model's values as placeholders.
  for (const label of ['Max new tokens', 'Min new tokens', 'Temperature', 'Top k', 'Top p', 'Repetition penalty', 'No repeat n-gram', 'Samples', 'Seed']) {
    assert.ok(await w.getByLabel(label, { exact: true }).isVisible(), label);
  }
  assert.equal(await w.getByLabel('Top p', { exact: true }).getAttribute('placeholder'), '0.95', 'the default bot\'s task_specific_params');
  assert.equal(await w.getByLabel('Seed', { exact: true }).getAttribute('placeholder'), 'random');
  assert.equal(await w.getByLabel('Max new tokens', { exact: true }).getAttribute('placeholder'), '160 − prompt');
  // URL parameters fill their fields; names that are not settings are ignored.
  assert.equal(await w.getByLabel('Top k', { exact: true }).inputValue(), '7');
  assert.ok(await w.getByLabel('One line each').isChecked());
  assert.ok(await w.getByLabel('Sample (off: greedy)').isChecked(), 'do_sample from the model');
  await p.getByRole('button', { name: 'Compute' }).click();
  await p.locator('bot-widget .status').filter({ hasText: /tokens\/s \(seed \d+\)/ }).waitFor({ timeout: 60000 });
  for (const t of await p.locator('bot-widget ol li').allTextContents()) assert.ok(!t.includes('\n'), 'one line each');
  await shot(p, 'settings-form');
  assert.deepEqual(p.errors, []);
  await p.context().close();
});
