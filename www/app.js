// The card page: ?model=owner/name (default: the bundled bot), ?hub=URL, ?prompt=…, and the
// generation settings by their HF names (?do_sample=false&max_new_tokens=24…); or, with
// ?create, the "Create your own bot" view (create.js).
import { renderCard } from './card-view.js';
import { createView } from './create.js';
import { askToDelete, keptBot } from './mine.js';
import { CREATE_PAGE, CREATE_PARAM, DEFAULT_MODEL, MINE_PARAM, bundledCards, cardUrl, hubUrl } from './models.js';
import { el, sharedWorker, widgetFromUrl } from './widget.js';

const params = new URLSearchParams(location.search);
const creating = params.has(CREATE_PARAM);
const mine = params.get(MINE_PARAM);
const model = params.get('model') || (creating || mine ? null : DEFAULT_MODEL);
const cardRoot = document.getElementById('card');

async function nav() {
  const links = [
    ['./', 'Default bot', model === DEFAULT_MODEL],
    ...(await bundledCards()).map((m) => [`?model=${encodeURIComponent(m)}`, m.split('/')[1], m === model]),
    [CREATE_PAGE, 'Create your own bot', creating],
  ];
  const list = el('ul');
  for (const [href, label, current] of links) {
    const a = el('a', { href }, label);
    if (current) a.setAttribute('aria-current', 'page');
    list.append(el('li', {}, a));
  }
  document.getElementById('bundled').append(list);
}

/** Draws `card`, names the tab after it (or `name`), and opens `widget` on its prompt. */
function show(card, name, widget) {
  renderCard(cardRoot, card);
  document.title = `${card.title || name} · botcard`;
  if (!params.has('prompt') && card.widget_text) widget.setAttribute('prompt', card.widget_text);
}

async function showCard(widget) {
  try {
    const url = await cardUrl(model, hubUrl(params.get('hub')));
    const res = await fetch(url);
    if (!res.ok) throw new Error(`No model card for ${model} (HTTP ${res.status}).`);
    show(await sharedWorker().parseCard(await res.arrayBuffer(), { keep: true }), model, widget);
  } catch (e) {
    say(e instanceof TypeError ? `The card of ${model} could not be downloaded (offline?).` : e.message);
  }
}

/** One sentence where the card would be. */
function say(text) {
  cardRoot.replaceChildren(el('p', { class: 'status' }, text));
  cardRoot.removeAttribute('aria-busy');
}

/** A bot made in this browser: its card, its widget, and Download and Delete. */
async function showMine(id) {
  const bot = await keptBot(id).catch(() => null);
  if (!bot) {
    say('This bot is not kept in this browser: it was deleted, or made in another browser or profile.');
    return;
  }
  const { files } = bot;
  const card = await sharedWorker().parseCard(await bot.card.arrayBuffer());
  // The archive's own picture, where the card names X's copy (which may be gone, or offline).
  if (bot.avatar && card.users.length === 1) card.users[0].avatar = URL.createObjectURL(bot.avatar);
  const name = card.title || id;
  const rest = new URLSearchParams(params);
  rest.delete(MINE_PARAM);
  const widget = widgetFromUrl(rest);
  show(card, name, widget);
  widget.useFiles(files, name);
  const download = el('button', { type: 'button' }, 'Download (zip)');
  download.addEventListener('click', async () => {
    const bytes = Object.fromEntries(await Promise.all(Object.entries(files).map(async ([n, f]) => [n, new Uint8Array(await f.arrayBuffer())])));
    const { zip, file } = await sharedWorker().zipFolder(card.handle?.replace(/^@/, '') || id, bytes);
    const a = el('a', { href: URL.createObjectURL(new Blob([zip], { type: 'application/zip' })), download: file });
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
  });
  const remove = el('button', { type: 'button' }, 'Delete from this browser');
  remove.addEventListener('click', async () => {
    if (await askToDelete(id, name)) location.href = CREATE_PAGE;
  });
  document.getElementById('try').append(widget, el('div', { class: 'mine-actions' }, download, remove));
}

nav();
if (creating) {
  createView(cardRoot, document.getElementById('try'), { steps: Number(params.get('steps')) || undefined });
} else if (mine) {
  showMine(mine);
} else {
  const widget = widgetFromUrl(params);
  document.getElementById('try').append(widget);
  showCard(widget);
}

if ('serviceWorker' in navigator) {
  // The host is asked for sw.js and version.js on each visit (not the HTTP cache): a new build
  // is found on the first visit after it is deployed, and opens on the next.
  navigator.serviceWorker.register('sw.js', { updateViaCache: 'none' }).catch(() => { /* offline support is a bonus */ });
  if (!self.crossOriginIsolated) {
    // The service worker makes the next visit cross-origin isolated, where the worker runs
    // another build (the threaded one): once this page's model is ready (not to slow its load),
    // the service worker caches that build, so the next visit downloads nothing before its model.
    document.addEventListener('bot-ready', async () => {
      const [registration, info] = await Promise.all([navigator.serviceWorker.ready, sharedWorker().info()]);
      registration.active?.postMessage({ type: 'warm', build: info.isolatedBuild });
    }, { capture: true, once: true });
  }
}
