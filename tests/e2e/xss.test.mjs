// The XSS corpus (tests/fixtures/cards/xss/) as a model card in Chromium, and the pages'
// Content-Security-Policy: nothing in the card runs — under the page's CSP, and again with the
// rendered card put into a page without any CSP (a second parse, where mutation XSS shows) —
// the legitimate parts of the card still show, and the pages work under their CSP with no
// violation reported.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, browser, mockHub, page, ready, shot, staticServer, serviceWorkerReady } from './helpers.mjs';

const XSS = join(ROOT, 'tests/fixtures/cards/xss');

/** The corpus: each payload, then each event handler on an HTML element, an SVG element and an
 * image (as tests/card.rs expands them). */
function payloads() {
  const blocks = readFileSync(join(XSS, 'payloads.txt'), 'utf8').split('\n%%\n').slice(1);
  const handlers = readFileSync(join(XSS, 'event-handlers.txt'), 'utf8').split(/\s+/).filter(Boolean);
  return [
    ...blocks.map((b) => b.replace(/\n+$/, '')),
    ...handlers.flatMap((h) => [
      `<div ${h}="alert(1)" tabindex="1">${h}</div>`,
      `<svg><rect ${h}=alert(1) width=9 height=9 /></svg>`,
      `<img src=x ${h}=alert(1)>`,
    ]),
  ];
}

const NAME = '</div><img src=x onerror=alert(1)>';
const escape = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A huggingtweets-style card with hostile front matter and header fields, legitimate content,
 * then every payload (one may rightly swallow what follows it, as an unclosed <textarea> does). */
function hostileCard(avatar) {
  return `---
widget:
- text: "<img src=x onerror=alert(1)>"
thumbnail: "javascript:alert(1)"
---

<div class="inline-flex flex-col" style="line-height: 1.5;">
    <div class="flex">
        <div style="display:inherit; width: 92px; height:92px; border-radius: 50%; background-size: cover; background-image: url('javascript:alert(1)')"></div>
        <div style="display:inherit; width: 92px; height:92px; border-radius: 50%; background-size: cover; background-image: url('${avatar}')" onmouseover="alert(1)"></div>
    </div>
    <div style="text-align: center; font-size: 16px; font-weight: 800">🤖 AI BOT 🤖</div>
    <div style="text-align: center; font-size: 16px; font-weight: 800">${escape(NAME)}</div>
    <div style="text-align: center; font-size: 14px;">@${escape('<svg onload=alert(1)>')}</div>
</div>

## Legitimate content

| Data | Good |
| --- | --- |
| Tweets downloaded | 3250 |
| Retweets | 476 |
| Short tweets | 36 |
| Tweets kept | 2738 |

See [the pipeline](https://github.com/borisdayma/huggingtweets) and **bold words**.

${payloads().join('\n\n')}

`;
}

let site, hub, b;

before(async () => {
  site = await staticServer();
  hub = await mockHub({
    repos: { 'evil/xss': 'tests/fixtures/models/tiny-st' },
    handlers: {
      '/evil/xss/resolve/main/README.md': (req, res, cors) =>
        res.writeHead(200, { ...cors, 'content-type': 'text/markdown; charset=utf-8' }).end(hostileCard(`${hub.url}/avatar.png`)),
      '/avatar.png': (req, res, cors) => res.writeHead(404, cors).end(),
    },
    // A page of the hub's origin without any Content-Security-Policy.
    extraPages: { '/blank.html': () => '<!doctype html><title>no csp</title><body></body>' },
  });
  b = await browser();
});

after(async () => {
  await b?.close();
  await site?.close();
  await hub?.close();
});

/** Records what would show that script ran: dialogs, window.__pwned, and CSP violations (each
 * one is markup the sanitizer let through that only the CSP stopped). */
async function watch(p) {
  const seen = { dialogs: [], violations: [] };
  p.on('dialog', (d) => { seen.dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  await p.exposeFunction('__violation', (v) => seen.violations.push(v));
  await p.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) =>
      window.__violation(`${e.violatedDirective} ${e.blockedURI} ${e.sample}`));
  });
  return seen;
}

/** Moves over, clicks and focuses every element of `root` (handlers that need a person). */
async function poke(p, selector) {
  await p.evaluate((selector) => {
    for (const el of document.querySelector(selector).querySelectorAll('*')) {
      for (const type of ['mouseover', 'mouseenter', 'pointerover', 'focus', 'click', 'dblclick', 'animationstart']) {
        el.dispatchEvent(new Event(type, { bubbles: true }));
      }
      el.focus?.();
    }
  }, selector);
  await p.waitForTimeout(500);
}

test('every XSS payload in a card runs nothing, under the CSP or without it, and the card still shows', async () => {
  const p = await page(b);
  const seen = await watch(p);
  await p.goto(`${site.url}/?model=evil/xss&hub=${encodeURIComponent(hub.url)}`);
  await p.locator('#card .badge').waitFor();
  await poke(p, '#card');
  // The legitimate content.
  assert.equal(await p.locator('#card .badge').textContent(), '🤖 AI BOT 🤖');
  assert.equal(await p.locator('#card .names').textContent(), NAME);
  assert.equal(await p.locator('#card .handle').textContent(), '@<svg onload=alert(1)>');
  assert.ok(await p.getByRole('cell', { name: '2738' }).isVisible());
  assert.ok(await p.getByRole('link', { name: 'the pipeline' }).isVisible());
  assert.ok(await p.locator('#card strong').filter({ hasText: 'bold words' }).isVisible());
  assert.equal(await p.getByRole('textbox', { name: 'Prompt' }).inputValue(), '<img src=x onerror=alert(1)>');
  // The widget still works on this card's model.
  await ready(p);
  assert.equal(await p.evaluate(() => window.__pwned), undefined);
  assert.deepEqual(seen.dialogs, []);
  assert.deepEqual(seen.violations, []);
  const kept = ['script', 'iframe', 'object', 'embed', 'form', 'svg', 'math', 'base', 'meta', 'link', 'style', 'template', '[style]', '[id]', '[name]', '[srcdoc]'];
  assert.equal(await p.locator(kept.map((k) => `#card .card-body ${k}`).join(', ')).count(), 0);
  await shot(p, 'xss-corpus-card');

  // The rendered card parsed a second time, in a page with no CSP at all.
  const html = await p.locator('#card .card-body').evaluate((e) => e.innerHTML);
  const q = await page(b);
  const bare = await watch(q);
  await q.goto(`${hub.url}/blank.html`);
  await q.evaluate((html) => { const d = document.createElement('div'); d.id = 'replay'; d.innerHTML = html; document.body.append(d); }, html);
  await poke(q, '#replay');
  assert.equal(await q.evaluate(() => window.__pwned), undefined);
  assert.deepEqual(bare.dialogs, []);
  await q.context().close();
  await p.context().close();
});

test('the pages carry one Content-Security-Policy and work under it', async () => {
  const policy = (file) => readFileSync(join(ROOT, 'www', file), 'utf8')
    .match(/<meta http-equiv="Content-Security-Policy" content="([^"]+)">/)?.[1];
  const csp = policy('index.html');
  assert.ok(csp, 'index.html has a CSP');
  assert.equal(policy('embed.html'), csp, 'embed.html has the same CSP');
  for (const directive of ["script-src 'self' 'wasm-unsafe-eval'", "object-src 'none'", "base-uri 'none'"]) {
    assert.ok(csp.split(/;\s*/).includes(directive), directive);
  }
  assert.ok(!/<script(?![^>]*\bsrc=)[^>]*>/.test(readFileSync(join(ROOT, 'www/embed.html'), 'utf8')), 'no inline script');

  // The card page: card, widget, Compute, the service worker; then the embed page.
  const p = await page(b);
  const seen = await watch(p);
  await p.goto(`${site.url}/`);
  await ready(p);
  await p.getByRole('button', { name: 'Compute' }).click();
  await p.locator('.bot-widget .status').filter({ hasText: /tokens\/s/ }).waitFor({ timeout: 60000 });
  await serviceWorkerReady(p);
  await p.goto(`${site.url}/embed.html?do_sample=false&max_new_tokens=4`);
  await ready(p);
  await p.getByRole('button', { name: 'Compute' }).click();
  await p.locator('.bot-widget .status').filter({ hasText: /tokens\/s/ }).waitFor({ timeout: 60000 });
  assert.deepEqual(seen.violations, []);
  assert.deepEqual(p.errors, []);
  await p.context().close();
});
