// Where a model's files live: the bundled default bot, the bundled seed cards, or a hub laid out
// like huggingface.co ({hub}/{owner}/{name}/resolve/main/{file}).

export const DEFAULT_MODEL = 'default';
/** What the page calls the default bot in a sentence. */
export const DEFAULT_NAME = 'the default bot';
/** The page's "Create your own bot" view: the URL parameter, and a link to it. */
export const CREATE_PARAM = 'create';
export const CREATE_PAGE = `?${CREATE_PARAM}`;
/** A bot made in this browser: ?mine=<id> (www/mine.js keeps them). */
export const MINE_PARAM = 'mine';
export const DEFAULT_HUB = 'https://huggingface.co';

const here = new URL('.', import.meta.url);

let bundled = null;
/** Models whose cards ship with the page (their weights still come from the hub), from
 * models/bundled.json, which the service worker reads too. */
export function bundledCards() {
  bundled ??= fetch(new URL('models/bundled.json', here)).then((r) => r.json()).catch(() => []);
  return bundled;
}

/** A hub base URL from ?hub=, or the default; only http(s) is accepted. */
export function hubUrl(value) {
  if (!value) return DEFAULT_HUB;
  const u = new URL(value, location.href);
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error(`The hub address "${value}" is not a web address.`);
  return u.href.replace(/\/+$/, '');
}

/** The folder URL that holds a model's files. */
export function modelBase(model, hub = DEFAULT_HUB) {
  if (!model || model === DEFAULT_MODEL) return new URL('models/default/', here).href;
  if (!/^[\w.-]+\/[\w.-]+$/.test(model) || model.includes('..')) {
    throw new Error(`"${model}" is not a model name like owner/name.`);
  }
  return `${hub}/${model}/resolve/main/`;
}

/** Where a model's card (README.md) is read from: the bundled copy when there is one. */
export async function cardUrl(model, hub = DEFAULT_HUB) {
  if ((await bundledCards()).includes(model)) return new URL(`models/${model}/README.md`, here).href;
  return modelBase(model, hub) + 'README.md';
}
