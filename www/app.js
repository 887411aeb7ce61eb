// The card page: ?model=owner/name (default: the bundled bot), ?hub=URL, ?prompt=…, and the
// generation settings by their HF names (?do_sample=false&max_new_tokens=24…); or, with
// ?create, the "Create your own bot" view (create.js).
import { renderCard } from './card-view.js';
import { createView } from './create.js';
import { CREATE_PAGE, CREATE_PARAM, DEFAULT_MODEL, bundledCards, cardUrl, hubUrl } from './models.js';
import { sharedWorker, widgetFromUrl } from './widget.js';

const params = new URLSearchParams(location.search);
const creating = params.has(CREATE_PARAM);
const model = params.get('model') || (creating ? null : DEFAULT_MODEL);
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

nav();
if (creating) {
  createView(cardRoot, document.getElementById('try'));
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
