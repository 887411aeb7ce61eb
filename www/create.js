// "Create your own bot" (?create): the person gives the X data archive X sent them (or a
// tweets.js, .jsonl or text file of posts), by picker or drag and drop; the worker reads it in
// WebAssembly and the card of the bot-to-be shows at once — name, @handle, picture, and the
// "Tweets downloaded / Retweets / Short tweets / Tweets kept" table, counted as the CLI counts.
// Nothing leaves the tab.
import { renderCard } from './card-view.js';
import { sharedWorker } from './widget.js';

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

/** Draws the create view: the introduction in `cardRoot` (the card once a file is read), the
 * file picker and drop zone in `panel`. */
export function createView(cardRoot, panel) {
  const intro = el('div', { class: 'create-intro' },
    el('h1', {}, 'Create your own bot'),
    el('p', {}, 'Ask X for your data (Settings › Your account › Download an archive of your data), '
      + 'then give this page the .zip it sends you. A bot is made from your own posts: '
      + 'retweets and very short posts are left out, as huggingtweets did.'),
    el('p', {}, 'Your archive is read in this tab. Nothing is uploaded.'));
  cardRoot.replaceChildren(intro);
  cardRoot.removeAttribute('aria-busy');

  const input = el('input', { type: 'file', accept: '.zip,.js,.jsonl,.json,.txt' });
  const pick = el('label', { class: 'pick' }, 'Choose your X archive (.zip)', input);
  const status = el('p', { class: 'status', role: 'status' });
  const zone = el('section', { class: 'dropzone', 'aria-label': 'Your posts' },
    el('p', {}, 'Drop your X archive here, or'), pick,
    el('p', { class: 'hint' }, 'A tweets.js, .jsonl or text file of posts works too.'), status);
  panel.replaceChildren(zone);

  let avatarUrl = null;
  let reading = 0;
  async function read(file) {
    const mine = ++reading;
    status.classList.remove('problem');
    status.textContent = `Reading ${file.name}…`;
    try {
      const got = await sharedWorker().readPosts(file);
      if (mine !== reading) return;
      if (avatarUrl) URL.revokeObjectURL(avatarUrl);
      avatarUrl = got.avatar ? URL.createObjectURL(new Blob([got.avatar.bytes], { type: got.avatar.type })) : null;
      const card = got.card;
      if (avatarUrl && card.users[0]) card.users[0].avatar = avatarUrl;
      renderCard(cardRoot, card);
      document.title = `${card.title || 'Your bot'} · botcard`;
      const kept = card.stats.reduce((n, s) => n + (s.kept ?? 0), 0);
      if (got.problem) {
        status.classList.add('problem');
        status.textContent = `${got.problem[0].toUpperCase()}${got.problem.slice(1)}.`;
      } else {
        status.textContent = `${kept} posts to learn from, read in this tab.`;
      }
    } catch (e) {
      if (mine !== reading) return;
      status.classList.add('problem');
      status.textContent = e.message;
    }
  }

  input.addEventListener('change', () => { if (input.files[0]) read(input.files[0]); });
  // The whole page takes the drop: the archive lands wherever the person lets go of it.
  document.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
  document.addEventListener('dragleave', (e) => { if (!e.relatedTarget) zone.classList.remove('over'); });
  document.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    const file = e.dataTransfer?.files?.[0];
    if (file) read(file);
  });
}
