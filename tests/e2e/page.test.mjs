// The static page end to end in headless Chromium: cards, the widget, the mock hub, offline,
// embedding, hostile input. Screenshots: target/e2e/*.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, browser, kept, mockHub, page, ready, shot, staticServer, until, serviceWorkerReady } from './helpers.mjs';

let site, hub, b;

before(async () => {
  site = await staticServer();
  hub = await mockHub({
    handlers: brokenHandlers(),
    extraPages: {
      // A page on another origin (the hub's) that embeds the widget in an iframe.
      '/embed-host.html': () => `<!doctype html><title>host</title><h1>Someone else's page</h1>
        <iframe title="bot" width="600" height="500"
          src="${site.url}/embed.html?model=botcard/tiny-st&hub=${encodeURIComponent(hub.url)}&prompt=Hello%20there&do_sample=false&max_new_tokens=8"></iframe>`,
    },
  });
  b = await browser();
});

// Files of broken repos on the mock hub.
const BROKEN = {
  '/broken/weights/resolve/main/config.json': 'tests/fixtures/models/tiny-st/config.json',
  '/broken/weights/resolve/main/tokenizer.json': 'tests/fixtures/models/tiny-st/tokenizer.json',
  '/huge/model/resolve/main/config.json': 'tests/fixtures/models/tiny-st/config.json',
  '/huge/model/resolve/main/tokenizer.json': 'tests/fixtures/models/tiny-st/tokenizer.json',
};
/** `botcard generate --json` on a fixture model (or `www/models/default`), prompt "My dream is". */
function cliGenerate(model, args) {
  const bin = join(ROOT, 'target/release/botcard');
  const dir = model === 'default' ? join(ROOT, 'www/models/default') : join(ROOT, 'tests/fixtures/models', model);
  return JSON.parse(execFileSync(bin, ['generate', '--model', dir, '--prompt', 'My dream is', ...args, '--json']).toString());
}

function brokenHandlers() {
  const h = {};
  for (const [path, file] of Object.entries(BROKEN)) {
    h[path] = (req, res, cors) => res.writeHead(200, cors).end(readFileSync(join(ROOT, file)));
  }
  h['/broken/weights/resolve/main/model.safetensors'] = (req, res, cors) => res.writeHead(200, cors).end('\x08\x00\x00\x00\x00\x00\x00\x00{garbage');
  // Declares 3 GB and sends nothing more: the worker must refuse from the header alone.
  h['/huge/model/resolve/main/model.safetensors'] = (req, res, cors) => {
    res.writeHead(200, { ...cors, 'content-length': String(3e9) });
    res.write('x');
    setTimeout(() => res.destroy(), 2000);
  };
  return h;
}

after(async () => {
  await b?.close();
  await site?.close();
  await hub?.close();
});

const SEEDS = [
  {
    model: 'huggingtweets/barackobama-karlousm-uofofn',
    badge: '🤖 AI CYBORG 🤖',
    names: ['University of OnFoeNem 🇭🇹', 'Karlous', 'Barack Obama'],
    numbers: ['3153', '1736', '2872'],
  },
  {
    model: 'huggingtweets/elonmusk-hirox246-hitoshinagai1',
    badge: '🤖 AI CYBORG 🤖',
    names: ['Elon Musk', 'ひろゆき, Hiroyuki Nishimura', '永井均'],
    numbers: ['2022', '3056', '136'],
  },
  { model: 'huggingtweets/joebiden', badge: '🤖 AI BOT 🤖', names: ['Joe Biden'], numbers: ['3250', '476', '2738'] },
];

for (const seed of SEEDS) {
  test(`seed card ${seed.model} renders names, badge, table and avatar fallbacks without mojibake`, async () => {
    const p = await page(b);
    await p.goto(`${site.url}/?model=${seed.model}&hub=${encodeURIComponent(hub.url)}`);
    const card = p.locator('#card');
    await card.locator('.badge').waitFor();
    assert.equal(await card.locator('.badge').textContent(), seed.badge);
    assert.equal(await card.locator('.handle').textContent(), '@' + seed.model.split('/')[1]);
    // Offline, every twimg picture fails: each avatar becomes a named fallback, never a broken icon.
    for (const name of seed.names) {
      await card.getByRole('img', { name, exact: true }).waitFor();
    }
    await p.waitForFunction(() => document.querySelectorAll('#card img.avatar').length === 0);
    assert.equal(await card.locator('.avatar').count(), seed.names.length);
    const text = await card.textContent();
    for (const n of seed.numbers) assert.ok(text.includes(n), `table number ${n}`);
    for (const bad of ['ðŸ', 'ü§ñ', '„Å', 'Ê∞']) assert.ok(!text.includes(bad), `mojibake ${bad}`);
    assert.equal(await p.getByRole('textbox', { name: 'Prompt' }).inputValue(), 'My dream is');
    await shot(p, `card-${seed.model.split('/')[1]}`);
    assert.deepEqual(p.errors, []);
    await p.context().close();
  });
}

test('the page opens on the default bot\'s card and Compute streams its samples', async () => {
  const p = await page(b);
  await p.goto(`${site.url}/?max_new_tokens=40&num_return_sequences=2`);
  const card = p.locator('#card');
  await card.locator('.badge').waitFor();
  assert.equal(await card.locator('.badge').textContent(), '🤖 AI BOT 🤖');
  assert.equal(await card.locator('.handle').textContent(), '@fortune');
  await card.getByRole('img', { name: 'Fortune Cookie', exact: true }).waitFor();
  const text = await card.textContent();
  for (const s of ['Tweets kept', 'fortunes-min', 'Unigram baseline perplexity', 'My dream is']) assert.ok(text.includes(s), s);
  await ready(p);
  // Streaming: a sample grows while the generation is still running. Seen as the page changes,
  // not by polling, which a short run on a busy machine can finish between two looks.
  await p.evaluate(() => {
    const root = document.querySelector('bot-widget').shadowRoot;
    self.streamed = false;
    new MutationObserver(() => {
      const li = root.querySelector('ol[aria-label="Generated samples"] li');
      if (li && li.textContent.length > 'My dream is'.length && root.querySelector('.compute').disabled) self.streamed = true;
    }).observe(root, { subtree: true, childList: true, characterData: true });
  });
  await p.getByRole('button', { name: 'Compute' }).click();
  const samples = p.getByRole('list', { name: 'Generated samples' }).locator('li');
  await p.locator('.bot-widget .status').filter({ hasText: /tokens\/s/ }).waitFor({ timeout: 60000 });
  assert.ok(await p.evaluate(() => self.streamed), 'text came while the run was going');
  assert.equal(await samples.count(), 2);
  for (const li of await samples.all()) assert.ok((await li.textContent()).startsWith('My dream is'));
  await shot(p, 'default-bot-samples');
  assert.deepEqual(p.errors, []);
  await p.context().close();
});

test('a card seen before is drawn as this build parsed it, not parsed again; another build\'s parse is not used', async () => {
  const p = await page(b);
  await p.goto(`${site.url}/`);
  const names = p.locator('#card .names');
  await names.waitFor();
  const title = await names.textContent();
  const build = readFileSync(join(ROOT, 'www/version.js'), 'utf8').match(/"id": "(\w+)"/)[1];
  const cards = () => p.evaluate(async () => (await (await caches.open('botcard-cards-v1')).keys()).map((r) => r.url));
  const [key] = await until(p, async () => {
    const keys = (await (await caches.open('botcard-cards-v1')).keys()).map((r) => r.url);
    return keys.length > 0 && keys;
  });
  assert.ok(key.includes(`/card/${build}/`), key);
  /** Moves the kept parse from `from` to `to`, titled `title`. */
  const edit = (from, to, title) => p.evaluate(async ([from, to, title]) => {
    const cache = await caches.open('botcard-cards-v1');
    const card = await (await cache.match(from)).json();
    await cache.delete(from);
    await cache.put(to, Response.json({ ...card, title }));
  }, [from, to, title]);
  // The next visit draws what the cache holds.
  await edit(key, key, 'Parsed before');
  await p.reload();
  await names.filter({ hasText: 'Parsed before' }).waitFor();
  // Another build's parse is passed by: the card is parsed again, and kept in its place.
  await edit(key, key.replace(`/card/${build}/`, '/card/0123456789abcdef/'), 'Another build');
  await p.reload();
  await names.filter({ hasText: title }).waitFor();
  await until(p, async ([key]) => {
    const keys = (await (await caches.open('botcard-cards-v1')).keys()).map((r) => r.url);
    return keys.length === 1 && keys[0] === key;
  }, [key]);
  assert.deepEqual(await cards(), [key]);
  assert.deepEqual(p.errors, []);
  await p.context().close();
});

test('greedy in the browser equals the CLI for a 2021-layout model from the hub', async () => {
  const cli = cliGenerate('tiny-2021', ['--greedy', '--max-new-tokens', '24', '--min-new-tokens', '24']);
  const p = await page(b);
  const q = new URLSearchParams({ model: 'botcard/tiny-2021', hub: hub.url, do_sample: 'false', max_new_tokens: '24', min_new_tokens: '24', prompt: 'My dream is' });
  // Every status line the widget shows, to see the download progress go by.
  await p.addInitScript(() => {
    window.__statuses = [];
    const attach = Element.prototype.attachShadow;
    Element.prototype.attachShadow = function (init) {
      const root = attach.call(this, init);
      new MutationObserver(() => {
        const s = root.querySelector('.status')?.textContent;
        if (s && window.__statuses.at(-1) !== s) window.__statuses.push(s);
      }).observe(root, { subtree: true, childList: true, characterData: true });
      return root;
    };
  });
  await p.goto(`${site.url}/?${q}`);
  await ready(p);
  const statuses = await p.evaluate(() => window.__statuses);
  assert.ok(statuses.some((t) => /^Downloading pytorch_model\.bin: [\d.]+ of 6\.5 MB$/.test(t)), statuses.join(' | '));
  await p.getByRole('button', { name: 'Compute' }).click();
  const done = p.locator('.bot-widget .status').filter({ hasText: /tokens\/s/ });
  await done.waitFor({ timeout: 60000 });
  // Greedy draws nothing at random: the status names no seed.
  assert.match(await done.textContent(), /^Done: 24 tokens at [\d.]+ tokens\/s\.$/);
  const samples = p.getByRole('list', { name: 'Generated samples' }).locator('li');
  assert.equal(await samples.count(), 1);
  assert.equal(await samples.first().textContent(), 'My dream is' + cli.sequences[0].text);
  // It really was the .bin + vocab.json + merges.txt layout that loaded.
  for (const f of ['pytorch_model.bin', 'vocab.json', 'merges.txt']) {
    assert.ok(hub.requests.includes(`/botcard/tiny-2021/resolve/main/${f}`), f);
  }
  await shot(p, 'greedy-equals-cli');
  await p.context().close();
});

test('a hostile card runs nothing', async () => {
  const p = await page(b);
  const dialogs = [];
  p.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });
  await p.goto(`${site.url}/?model=evil/hostile&hub=${encodeURIComponent(hub.url)}`);
  await p.locator('#card .badge').waitFor();
  for (const a of await p.locator('#card a, #card .avatar, #card img').all()) await a.hover({ timeout: 500 }).catch(() => {});
  await p.locator('#card').getByText('click me').click({ timeout: 1000 }).catch(() => {});
  await p.waitForTimeout(300);
  assert.equal(await p.evaluate(() => window.__pwned), undefined);
  assert.equal(await p.locator('#card script, #card iframe, #card form, #card svg, #card math, #card object, #card embed, #card .card-body [style], #card [onerror]').count(), 0);
  assert.deepEqual(dialogs, []);
  // The prompt is text, never markup.
  assert.equal(await p.getByRole('textbox', { name: 'Prompt' }).inputValue(), '<img src=x onerror=alert(1)>');
  await shot(p, 'hostile-card');
  await p.context().close();
});

test('a missing model says so in one sentence and offers the default bot', async () => {
  const p = await page(b);
  await p.goto(`${site.url}/?model=nobody/missing&hub=${encodeURIComponent(hub.url)}`);
  await p.locator('.bot-widget .status').filter({ hasText: 'The model has no config.json.' }).waitFor();
  await p.getByRole('button', { name: 'Use the default bot' }).click();
  await ready(p);
  await shot(p, 'missing-model');
  await p.context().close();
});

test('offline, a reload renders the page and Compute generates', async () => {
  const p = await page(b);
  await p.goto(`${site.url}/`);
  await ready(p);
  // The service worker controls the pages opened once it is installed.
  await serviceWorkerReady(p);
  await p.reload();
  assert.ok(await p.evaluate(() => navigator.serviceWorker.controller !== null));
  // Offline needs the model kept.
  await kept(p, `${site.url}/models/default/`);
  await p.context().setOffline(true);
  await p.reload();
  await p.locator('#card .badge').waitFor();
  await ready(p);
  await p.getByRole('button', { name: 'Compute' }).click();
  await p.locator('.bot-widget .status').filter({ hasText: /tokens\/s/ }).waitFor({ timeout: 60000 });
  assert.ok((await p.locator('ol[aria-label="Generated samples"] li').first().textContent()).length > 'My dream is'.length);
  await shot(p, 'offline-reload');
  await p.context().close();
});

test('the embed works in an iframe on another origin', async () => {
  const p = await page(b);
  await p.goto(`${hub.url}/embed-host.html`);
  const frame = p.frameLocator('iframe[title=bot]');
  await ready(frame);
  await frame.getByRole('button', { name: 'Compute' }).click();
  await frame.locator('.bot-widget .status').filter({ hasText: /tokens\/s/ }).waitFor({ timeout: 60000 });
  const text = await frame.locator('ol[aria-label="Generated samples"] li').first().textContent();
  assert.ok(text.startsWith('Hello there') && text.length > 'Hello there'.length, text);
  await shot(p, 'embed-cross-origin');
  await p.context().close();
});

for (const opfs of [true, false]) {
  test(`the default bot samples the same text in the browser as the CLI${opfs ? '' : ' (no origin private file system)'}`, async () => {
    const cli = cliGenerate('default', ['--seed', '7', '--num-return-sequences', '3']);
    const p = await page(b);
    if (!opfs) {
      // As a browser without the origin private file system: the held file is streamed to the cache.
      await p.context().route('**/worker.js', async (route) => {
        const r = await route.fetch();
        route.fulfill({ response: r, body: `delete StorageManager.prototype.getDirectory;\n${await r.text()}` });
      });
    }
    await p.goto(`${site.url}/?seed=7&num_return_sequences=3`);
    await ready(p);
    await p.getByRole('button', { name: 'Compute' }).click();
    await p.locator('.bot-widget .status').filter({ hasText: /tokens\/s/ }).waitFor({ timeout: 60000 });
    const texts = await p.locator('ol[aria-label="Generated samples"] li').allTextContents();
    assert.deepEqual(texts, cli.sequences.map((s) => 'My dream is' + s.text));
    if (opfs) await shot(p, 'default-bot-equals-cli');
    // It was quantized at load and is cached as held (a q8_0 model.gguf, written a piece at a
    // time): a second visit reads that file instead and writes the same text.
    await kept(p, `${site.url}/models/default/`);
    // The scratch file the held file was written to first is gone.
    const scratch = await p.evaluate(async () => {
      const names = [];
      for await (const n of (await navigator.storage.getDirectory()).keys()) names.push(n);
      return names;
    });
    assert.deepEqual(scratch, []);
    await p.reload();
    await ready(p);
    await p.getByRole('button', { name: 'Compute' }).click();
    await p.locator('.bot-widget .status').filter({ hasText: /tokens\/s/ }).waitFor({ timeout: 60000 });
    const again = await p.locator('ol[aria-label="Generated samples"] li').allTextContents();
    assert.deepEqual(again, texts, 'the held cache writes the same text');
    await p.context().close();
  });
}

test('the same seed samples the same text in the browser as the CLI', async () => {
  const cli = cliGenerate('tiny-2021', ['--seed', '42', '--max-new-tokens', '30', '--num-return-sequences', '2']);
  const p = await page(b);
  const q = new URLSearchParams({ model: 'botcard/tiny-2021', hub: hub.url, seed: '42', max_new_tokens: '30', num_return_sequences: '2' });
  await p.goto(`${site.url}/?${q}`);
  await ready(p);
  await p.getByRole('textbox', { name: 'Prompt' }).press('Control+Enter');
  await p.locator('.bot-widget .status').filter({ hasText: /tokens\/s/ }).waitFor({ timeout: 60000 });
  const texts = await p.locator('ol[aria-label="Generated samples"] li').allTextContents();
  assert.deepEqual(texts, cli.sequences.map((s) => 'My dream is' + s.text));
  await p.context().close();
});

test('"Use local files" loads a model folder from disk', async () => {
  const p = await page(b);
  await p.goto(`${site.url}/?do_sample=false&max_new_tokens=10`);
  await ready(p);
  await p.locator('bot-widget input[type=file]').setInputFiles(join(ROOT, 'tests/fixtures/models/relu-st'));
  await p.locator('.bot-widget .status').filter({ hasText: 'The local model is ready' }).waitFor({ timeout: 60000 });
  await p.getByRole('button', { name: 'Compute' }).click();
  await p.locator('.bot-widget .status').filter({ hasText: /tokens\/s/ }).waitFor({ timeout: 60000 });
  const cli = cliGenerate('relu-st', ['--greedy', '--max-new-tokens', '10']);
  assert.equal(await p.locator('ol[aria-label="Generated samples"] li').first().textContent(), 'My dream is' + cli.sequences[0].text);
  await shot(p, 'local-files');
  await p.context().close();
});

test('a second visit reads the model from the Cache API instead of the hub', async () => {
  const p = await page(b);
  const q = new URLSearchParams({ model: 'botcard/relu-st', hub: hub.url });
  const weights = '/botcard/relu-st/resolve/main/model.safetensors';
  const before = hub.requests.filter((r) => r === weights).length;
  await p.goto(`${site.url}/?${q}`);
  await ready(p);
  assert.equal(hub.requests.filter((r) => r === weights).length, before + 1);
  // A tab closed before the model is kept keeps no copy.
  await kept(p, `${hub.url}/botcard/relu-st/resolve/main/`);
  await p.reload();
  await ready(p);
  assert.equal(hub.requests.filter((r) => r === weights).length, before + 1, 'no second download');
  await p.context().close();
});

test('Stop ends a running generation early', async () => {
  const p = await page(b);
  await p.goto(`${site.url}/?num_return_sequences=64&max_new_tokens=50&min_new_tokens=50`);
  await ready(p);
  // Press Stop the moment the first token shows.
  await p.evaluate(() => {
    const root = document.querySelector('bot-widget').shadowRoot;
    const list = root.querySelector('ol[aria-label="Generated samples"]');
    new MutationObserver((_, obs) => {
      if (list.textContent.length > 64 * 'My dream is'.length) { obs.disconnect(); root.querySelector('.stop').click(); }
    }).observe(list, { subtree: true, childList: true, characterData: true });
  });
  await p.getByRole('button', { name: 'Compute' }).click();
  const status = p.locator('.bot-widget .status').filter({ hasText: /^Stopped: \d+ tokens/ });
  await status.waitFor({ timeout: 60000 });
  const tokens = Number((await status.textContent()).match(/(\d+) tokens/)[1]);
  assert.ok(tokens < 64 * 50, `${tokens} tokens`);
  assert.ok(await p.getByRole('button', { name: 'Compute' }).isEnabled());
  await p.context().close();
});

for (const [model, sentence] of [
  ['broken/weights', /^model\.safetensors: not a valid safetensors file/],
  ['huge/model', /^model\.safetensors is 3\.0 GB, too big to run in a browser tab\.$/],
]) {
  test(`a model that cannot be had (${model}) is one sentence with ways out`, async () => {
    const p = await page(b);
    await p.goto(`${site.url}/?model=${model}&hub=${encodeURIComponent(hub.url)}`);
    await p.locator('.bot-widget .status').filter({ hasText: sentence }).waitFor({ timeout: 30000 });
    assert.ok(await p.getByRole('button', { name: 'Use the default bot' }).isVisible());
    assert.ok(await p.locator('.bot-widget .recover').getByRole('button', { name: 'Use local files' }).isVisible());
    assert.equal(await p.getByRole('button', { name: 'Use local files' }).count(), 1, 'offered once');
    assert.ok(await p.locator('.bot-widget .progress').isHidden(), 'no endless progress bar');
    await shot(p, `unavailable-${model.replace('/', '-')}`);
    await p.context().close();
  });
}

test('dropping model files on the widget loads them', async () => {
  const p = await page(b);
  await p.goto(`${site.url}/?do_sample=false&max_new_tokens=6`);
  await ready(p);
  const names = ['config.json', 'pytorch_model.bin', 'vocab.json', 'merges.txt'];
  const files = names.map((n) => ({ n, b64: readFileSync(join(ROOT, 'tests/fixtures/models/tiny-2021', n)).toString('base64') }));
  const dt = await p.evaluateHandle((files) => {
    const dt = new DataTransfer();
    for (const { n, b64 } of files) dt.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], n));
    return dt;
  }, files);
  await p.dispatchEvent('bot-widget', 'drop', { dataTransfer: dt });
  await p.locator('.bot-widget .status').filter({ hasText: 'The local model is ready' }).waitFor({ timeout: 60000 });
  await p.getByRole('button', { name: 'Compute' }).click();
  await p.locator('.bot-widget .status').filter({ hasText: /tokens\/s/ }).waitFor({ timeout: 60000 });
  const cli = cliGenerate('tiny-2021', ['--greedy', '--max-new-tokens', '6']);
  assert.equal(await p.locator('ol[aria-label="Generated samples"] li').first().textContent(), 'My dream is' + cli.sequences[0].text);
  await p.context().close();
});
