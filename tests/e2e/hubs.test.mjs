// Hubs and mirrors that answer oddly: missing files without CORS headers or with 403/500,
// required files that cannot be had, HTML error pages served as files, a Content-Length that
// lies, a slow trickle that Stop cancels, and redirects to another origin. Each ends in a loaded
// model whenever its required files can be had, and otherwise in one sentence with ways out. A
// far hub is asked for the small files the library always wants, and for a tokenizer's two
// files, side by side.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, browser, mockHub, page, ready, shot, staticServer } from './helpers.mjs';

const TINY = 'tests/fixtures/models/tiny-2021';
/** The files tiny-2021 has, and the ones the page asks a hub for that it lacks. */
const HAS = ['config.json', 'pytorch_model.bin', 'vocab.json', 'merges.txt'];
const LACKS = ['generation_config.json', 'model.gguf', 'model.safetensors', 'tokenizer.json'];
const bytesOf = (name) => readFileSync(join(ROOT, TINY, name));
const WEB_PAGE = '<!doctype html><html><head><title>Not Found</title></head><body>Sorry, no such page.</body></html>';

let site, hub, cdn, b;
/** The hub's answers by path: (req, res, cors) handlers, looked up as each request comes. */
const handlers = {};
/** Paths whose connection closed before all of the body was sent. */
const cut = new Set();
const fileUrl = (name, file) => `/${name}/resolve/main/${file}`;

/** A repo of tiny-2021 on the hub whose missing files are answered by `missing`, and the files
 * named in `files` by their handlers; returns its name. */
function repo(name, missing, files = {}) {
  for (const file of HAS) handlers[fileUrl(name, file)] = serve(bytesOf(file));
  for (const file of LACKS) handlers[fileUrl(name, file)] = missing;
  for (const [file, h] of Object.entries(files)) handlers[fileUrl(name, file)] = h;
  return name;
}

const status = (code, cors) => (req, res, open) => res.writeHead(code, cors ? open : {}).end(`HTTP ${code}`);
const serve = (bytes, headers = {}) => (req, res, cors) =>
  res.writeHead(200, { ...cors, 'content-length': bytes.length, ...headers }).end(bytes);

before(async () => {
  site = await staticServer();
  // Another origin, as the hub's file CDN is: it serves tiny-2021's weights, with CORS or not.
  cdn = await mockHub({
    handlers: {
      '/open/pytorch_model.bin': serve(bytesOf('pytorch_model.bin')),
      '/closed/pytorch_model.bin': (req, res) => res.writeHead(200, { 'content-length': bytesOf('pytorch_model.bin').length }).end(bytesOf('pytorch_model.bin')),
    },
  });
  hub = await mockHub({ handlers });
  b = await browser();
});

after(async () => {
  await b?.close();
  await site?.close();
  await hub?.close();
  await cdn?.close();
});

/** A page with the widget on `model` from the odd hub. */
async function open(model, extra = {}) {
  const p = await page(b);
  const q = new URLSearchParams({ model, hub: hub.url, do_sample: 'false', max_new_tokens: '6', ...extra });
  await p.goto(`${site.url}/?${q}`);
  return p;
}

/** Waits for the widget's one sentence and checks that the ways out are offered. */
async function failsWith(p, sentence, shotName) {
  const status = p.locator('.bot-widget .status');
  await status.filter({ hasText: sentence }).waitFor({ timeout: 30000 }).catch(async (e) => {
    throw new Error(`the widget says ${JSON.stringify(await status.textContent())}, not ${sentence}`, { cause: e });
  });
  assert.ok(await p.getByRole('button', { name: 'Use the default bot' }).isVisible());
  assert.ok(await p.locator('.bot-widget .progress').isHidden(), 'no endless progress bar');
  if (shotName) await shot(p, shotName);
}

const loads = [
  repo('odd/missing-404-without-cors', status(404, false)),
  repo('odd/missing-403', status(403, true)),
  repo('odd/missing-500', status(500, true)),
  repo('odd/missing-500-without-cors', status(500, false)),
  repo('odd/no-content-length', status(404, true), {
    'pytorch_model.bin': (req, res, cors) => {
      const bytes = bytesOf('pytorch_model.bin');
      res.writeHead(200, cors); // chunked: no Content-Length
      res.write(bytes.subarray(0, 1000));
      setTimeout(() => res.end(bytes.subarray(1000)), 50);
    },
  }),
  repo('odd/redirect-to-cdn', status(404, true), {
    'pytorch_model.bin': (req, res, cors) => res.writeHead(302, { ...cors, location: `${cdn.url}/open/pytorch_model.bin` }).end(),
  }),
];

for (const model of loads) {
  test(`a hub whose files come oddly (${model.split('/')[1]}) still gives a working model`, async () => {
    const p = await open(model);
    await ready(p);
    await p.getByRole('button', { name: 'Compute' }).click();
    await p.locator('.bot-widget .status').filter({ hasText: /^Done: 6 tokens/ }).waitFor({ timeout: 60000 });
    assert.match(await p.locator('ol[aria-label="Generated samples"] li').first().textContent(), /^My dream is.+/);
    assert.deepEqual(p.errors, []);
    await p.context().close();
  });
}

const refusals = [
  [repo('odd/config-500', status(404, true), { 'config.json': status(500, true) }),
    'Could not download config.json (HTTP 500).'],
  [repo('odd/config-without-cors', status(404, true), { 'config.json': (req, res) => res.writeHead(200).end(bytesOf('config.json')) }),
    'Could not download config.json: the hub answered without the CORS header (Access-Control-Allow-Origin) that lets web pages read it.'],
  [repo('odd/weights-403', status(404, true), { 'pytorch_model.bin': status(403, true) }),
    'Could not download pytorch_model.bin (HTTP 403).'],
  [repo('odd/config-is-a-web-page', status(404, true), { 'config.json': serve(Buffer.from(WEB_PAGE), { 'content-type': 'text/html' }) }),
    'config.json is a web page, not the model\'s file: the hub sent an error page in its place.'],
  [repo('odd/weights-are-a-web-page', status(404, true), { 'pytorch_model.bin': serve(Buffer.from(WEB_PAGE), { 'content-type': 'text/html' }) }),
    'pytorch_model.bin is a web page, not the model\'s file: the hub sent an error page in its place.'],
  [repo('odd/redirect-to-cdn-without-cors', status(404, true), {
    'pytorch_model.bin': (req, res, cors) => res.writeHead(302, { ...cors, location: `${cdn.url}/closed/pytorch_model.bin` }).end(),
  }), 'Could not download pytorch_model.bin: the hub answered without the CORS header (Access-Control-Allow-Origin) that lets web pages read it.'],
  // Says 2 MB more than it sends (6.5 MB), then closes. How much of it the page reads varies:
  // once the browser sees the connection end short, it may drop what the page has not read yet
  // (4.5 MB once, here), so the sentence's figure is checked to be at most what was sent.
  [repo('odd/content-length-too-long', status(404, true), {
    'pytorch_model.bin': (req, res, cors) => {
      const bytes = bytesOf('pytorch_model.bin');
      res.writeHead(200, { ...cors, 'content-length': bytes.length + 2e6 });
      res.write(bytes, () => res.socket.end());
    },
  }), /^Could not download pytorch_model\.bin: the download broke off after ([0-5]\.\d|6\.[0-5]) MB\.$/],
  // Says half of what it sends: the browser keeps what was declared, a cut-short file.
  [repo('odd/content-length-too-short', status(404, true), {
    'pytorch_model.bin': (req, res, cors) => {
      const bytes = bytesOf('pytorch_model.bin');
      res.writeHead(200, { ...cors, 'content-length': bytes.length >> 1, connection: 'close' });
      res.end(bytes);
    },
  }), /^pytorch_model\.bin: /],
];

for (const [model, sentence] of refusals) {
  test(`a model the hub will not give (${model.split('/')[1]}) is one sentence`, async () => {
    const p = await open(model);
    await failsWith(p, sentence, `hub-${model.split('/')[1]}`);
    await p.context().close();
  });
}

for (const [model, sentence] of [['odd/content-length-too-long', /broke off/], ['odd/content-length-too-short', /^pytorch_model\.bin: /]]) {
  test(`after a failed load (${model.split('/')[1]}), a mended hub's file is downloaded again, not read from the cache`, async () => {
    // f32 caches the checkpoint as it comes (q8_0 caches what it made of it, once loaded).
    const p = await open(model, { dtype: 'f32' });
    await failsWith(p, sentence);
    const path = fileUrl(model, 'pytorch_model.bin');
    handlers[path] = serve(bytesOf('pytorch_model.bin'));
    const before = hub.requests.filter((r) => r === path).length;
    await p.reload();
    await ready(p);
    assert.equal(hub.requests.filter((r) => r === path).length, before + 1);
    await p.context().close();
  });
}

test('a slow trickle shows the download moving, and Stop cancels it', async () => {
  const bytes = bytesOf('pytorch_model.bin');
  const path = fileUrl('odd/trickle', 'pytorch_model.bin');
  // 16 KB every 50 ms: the whole file would take 20 s.
  repo('odd/trickle', status(404, true), { 'pytorch_model.bin': (req, res, cors) => {
    res.writeHead(200, { ...cors, 'content-length': bytes.length });
    let at = 0;
    const timer = setInterval(() => {
      res.write(bytes.subarray(at, at + 16384));
      at += 16384;
      if (at >= bytes.length) { clearInterval(timer); res.end(); }
    }, 50);
    res.on('close', () => { clearInterval(timer); if (at < bytes.length) cut.add(path); });
  } });
  const p = await open('odd/trickle');
  const progress = p.locator('.bot-widget .status').filter({ hasText: /^Downloading pytorch_model\.bin: / });
  await progress.waitFor({ timeout: 30000 });
  const first = await progress.textContent();
  await p.waitForFunction((first) => {
    const s = document.querySelector('bot-widget').shadowRoot.querySelector('.status').textContent;
    return s.startsWith('Downloading pytorch_model.bin') && s !== first;
  }, first, { timeout: 10000 });
  assert.ok(await p.getByRole('button', { name: 'Stop' }).isEnabled(), 'Stop is offered during a download');
  await p.getByRole('button', { name: 'Stop' }).click();
  await failsWith(p, 'Stopped loading. Press Compute to load the model again.', 'hub-trickle-stopped');
  for (let i = 0; i < 50 && !cut.has(path); i++) await new Promise((r) => setTimeout(r, 100));
  assert.ok(cut.has(path), 'the download was cancelled at the hub');
  assert.ok(await p.getByRole('button', { name: 'Compute' }).isEnabled());
  await p.context().close();
});

// A far hub: repo `name` of tiny-2021 (its missing files 404 with CORS) that holds `files[0]`
// back until all of `files` are asked for (or 10 s have passed). A page that asks one file at a
// time sees the others come only after the first has; one that reads them side by side sees
// them all asked for before the first is answered, each once.
for (const [name, files, what] of [
  ['odd/far', ['config.json', 'generation_config.json', 'tokenizer.json'], 'the small files the library always wants'],
  ['odd/far-2021', ['vocab.json', 'merges.txt'], 'a tokenizer\'s two files (it has no tokenizer.json)'],
]) {
  test(`a far hub is asked for ${what} side by side, not a round trip after another (${files.join(', ')})`, async () => {
    const paths = files.map((f) => fileUrl(name, f));
    const askedFirst = [];
    repo(name, status(404, true), {
      [files[0]]: (req, res, cors) => {
        const started = Date.now();
        const timer = setInterval(() => {
          if (!paths.every((p) => hub.requests.includes(p)) && Date.now() - started < 10000) return;
          clearInterval(timer);
          askedFirst.push(...paths.filter((p) => hub.requests.includes(p)));
          serve(bytesOf(files[0]))(req, res, cors);
        }, 20);
      },
    });
    const p = await open(name);
    await ready(p);
    assert.deepEqual(askedFirst, paths);
    for (const path of paths) assert.equal(hub.requests.filter((r) => r === path).length, 1, `${path} asked for once`);
    await p.context().close();
  });
}
