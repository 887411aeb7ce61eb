// The bots a person made in this browser ("Create your own bot"), kept in the Cache API until
// they delete them: each bot's folder under mine/<id>/<file name>, and the archive's profile
// picture, which the card shows, under mine/<id>/avatar (not a file of the folder). The cache is
// the one list: a bot is there when its README.md is.

const CACHE = 'botcard-mine-v1';
const CARD = 'README.md';
const AVATAR = 'avatar';
const here = new URL('.', import.meta.url);
const url = (id, name) => new URL(`mine/${encodeURIComponent(id)}/${name}`, here).href;

/** Keeps a bot's folder (`{name: Uint8Array}`) and its picture (`{bytes, type}` or null);
 * returns its id. The card goes last, so a bot cut short by a closed tab is not listed. */
export async function saveBot(handle, files, avatar) {
  const id = `${handle.replace(/[^\w.-]/g, '') || 'bot'}-${Date.now().toString(36)}`;
  const cache = await caches.open(CACHE);
  if (avatar) await cache.put(url(id, AVATAR), new Response(avatar.bytes, { headers: { 'content-type': avatar.type } }));
  const names = Object.keys(files).filter((n) => n !== CARD);
  for (const name of [...names, CARD]) {
    await cache.put(url(id, name), new Response(files[name], { headers: { 'content-length': String(files[name].length) } }));
  }
  // Asks the browser not to evict the site's storage when space runs low (it may say no).
  navigator.storage?.persist?.().catch(() => {});
  return id;
}

/** The kept bots' ids, newest first. */
export async function listBots() {
  const cache = await caches.open(CACHE);
  const ids = (await cache.keys())
    .map((r) => r.url.slice(here.href.length).match(/^mine\/([^/]+)\/README\.md$/)?.[1])
    .filter(Boolean)
    .map(decodeURIComponent);
  const made = (id) => parseInt(id.split('-').at(-1), 36) || 0;
  return ids.sort((a, b) => made(b) - made(a));
}

/** A kept bot: `{files, card, avatar}`, its folder's files as `File`s by name, its card (the
 * README.md of them) and its picture (a Blob, or null); null if there is no such bot. */
export async function keptBot(id) {
  const cache = await caches.open(CACHE);
  const prefix = url(id, '');
  const files = {};
  let avatar = null;
  for (const req of await cache.keys()) {
    if (!req.url.startsWith(prefix)) continue;
    const name = req.url.slice(prefix.length);
    const blob = await (await cache.match(req)).blob();
    if (name === AVATAR) avatar = blob;
    else files[name] = new File([blob], name);
  }
  return files[CARD] ? { files, card: files[CARD], avatar } : null;
}

/** Asks the person whether to delete the kept bot `name`, and does if they agree; whether it did. */
export async function askToDelete(id, name) {
  if (!confirm(`Delete ${name} from this browser? Download it first to keep it.`)) return false;
  await deleteBot(id);
  return true;
}

/** Forgets a kept bot (its card first, so a half-deleted bot is not listed). */
export async function deleteBot(id) {
  const cache = await caches.open(CACHE);
  await cache.delete(url(id, CARD));
  const prefix = url(id, '');
  for (const req of await cache.keys()) if (req.url.startsWith(prefix)) await cache.delete(req);
}
