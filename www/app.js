// The card page: ?model=owner/name (default: the bundled bot), ?hub=URL, ?prompt=…, and the
// generation settings by their HF names (?do_sample=false&max_new_tokens=24…); or, with
// ?create, the "Create your own bot" view (create.js).
import { renderCard } from './card-view.js';
import { createView } from './create.js';
import { deleteBot, keptBot } from './mine.js';
import { CREATE_PAGE, CREATE_PARAM, DEFAULT_MODEL, MINE_PARAM, bundledCards, cardUrl, hubUrl } from './models.js';
import { sharedWorker, widgetFromUrl } from './widget.js';

const params = new URLSearchParams(location.search);
const creating = params.has(CREATE_PARAM);
const mine = params.get(MINE_PARAM);
const model = params.get('model') || (creating || mine ? null : DEFAULT_MODEL);
const cardRoot = document.getElementById('card');

async function nav() {
  const links = [[DEFAULT_MODEL, 'Default bot'], ...(await bundledCards()).map((m) => [m, m.split('/')[1]])];
  const list = document.createElement('ul');
  for (const [m, label] of links) {
    const a = document.createElement('a');
    a.href = m === DEFAULT_MODEL ? './' : `?model=${encodeURIComponent(m)}`;
    a.textContent = label;
    if (m === model) a.setAttribute('aria-current', 'page');
    const li = document.createElement('li');
    li.append(a);
    list.append(li);
  }
  const create = document.createElement('a');
  create.href = CREATE_PAGE;
  create.textContent = 'Create your own bot';
  if (creating) create.setAttribute('aria-current', 'page');
  const li = document.createElement('li');
  li.append(create);
  list.append(li);
  document.getElementById('bundled').append(list);
}

async function showCard(widget) {
  try {
    const url = await cardUrl(model, hubUrl(params.get('hub')));
    const res = await fetch(url);
    if (!res.ok) throw new Error(`No model card for ${model} (HTTP ${res.status}).`);
    const card = await sharedWorker().parseCard(await res.arrayBuffer());
    renderCard(cardRoot, card);
    document.title = `${card.title || model} · botcard`;
    if (!params.has('prompt') && card.widget_text) widget.setAttribute('prompt', card.widget_text);
  } catch (e) {
    const p = document.createElement('p');
    p.className = 'status';
    p.textContent = e instanceof TypeError ? `The card of ${model} could not be downloaded (offline?).` : e.message;
    cardRoot.replaceChildren(p);
    cardRoot.removeAttribute('aria-busy');
  }
}

function say(text) {
  const p = document.createElement('p');
  p.className = 'status';
  p.textContent = text;
  cardRoot.replaceChildren(p);
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
  renderCard(cardRoot, card);
  const name = card.title || id;
  document.title = `${name} · botcard`;
  const rest = new URLSearchParams(params);
  rest.delete(MINE_PARAM);
  const widget = widgetFromUrl(rest);
  if (!params.has('prompt') && card.widget_text) widget.setAttribute('prompt', card.widget_text);
  widget.useFiles(files, name);
  const download = document.createElement('button');
  download.type = 'button';
  download.textContent = 'Download (zip)';
  download.addEventListener('click', async () => {
    const bytes = Object.fromEntries(await Promise.all(Object.entries(files).map(async ([n, f]) => [n, new Uint8Array(await f.arrayBuffer())])));
    const { zip, file } = await sharedWorker().zipFolder(card.handle?.replace(/^@/, '') || id, bytes);
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([zip], { type: 'application/zip' }));
    a.download = file;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
  });
  const remove = document.createElement('button');
  remove.type = 'button';
  remove.textContent = 'Delete from this browser';
  remove.addEventListener('click', async () => {
    if (!confirm(`Delete ${name} from this browser? Download it first to keep it.`)) return;
    await deleteBot(id);
    location.href = CREATE_PAGE;
  });
  const actions = document.createElement('div');
  actions.className = 'mine-actions';
  actions.append(download, remove);
  document.getElementById('try').append(widget, actions);
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
  // is found on the visit after it is deployed.
  navigator.serviceWorker.register('sw.js', { updateViaCache: 'none' }).catch(() => { /* offline support is a bonus */ });
}
