// "Create your own bot" (?create): the person gives the X data archive X sent them (or a
// tweets.js, .jsonl or text file of posts), by picker or drag and drop; the worker reads it in
// WebAssembly and the card of the bot-to-be shows at once — name, @handle, picture, and the
// "Tweets downloaded / Retweets / Short tweets / Tweets kept" table, counted as the CLI counts.
// Nothing leaves the tab.
import { renderCard } from './card-view.js';
import { askToDelete, keptBot, listBots, saveBot } from './mine.js';
import { DEFAULT_MODEL, DEFAULT_NAME, MINE_PARAM, modelBase } from './models.js';
import { el, sharedWorker } from './widget.js';

/** "2:05" for 125 seconds. */
function clock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

/** Draws the create view: the introduction in `cardRoot` (the card once a file is read), the
 * file picker and drop zone, training, and the person's bots in `panel`. `steps` (from ?steps=)
 * shortens training to that many steps. */
export function createView(cardRoot, panel, { steps } = {}) {
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
  const trainButton = el('button', { type: 'button', class: 'train' }, 'Train my bot');
  const stopButton = el('button', { type: 'button', class: 'stop', hidden: '' }, 'Stop');
  const bar = el('progress', { 'aria-label': 'Training', hidden: '' });
  const progress = el('p', { class: 'status', role: 'status' });
  const training = el('section', { class: 'training', 'aria-label': 'Training', hidden: '' },
    el('p', { class: 'hint' }, `Your bot starts from ${DEFAULT_NAME} and learns from your posts, `
      + 'here in this tab: a few minutes. You can keep using the page meanwhile.'),
    el('div', { class: 'row' }, trainButton, stopButton), bar, progress);
  const yours = el('section', { class: 'yours', 'aria-label': 'Your bots', hidden: '' }, el('h2', {}, 'Your bots'), el('ul'));
  panel.replaceChildren(zone, training, yours);
  showYours();

  let avatarUrl = null;
  let reading = 0;
  let busy = false;
  /** The file read last, when it can be trained on, and its picture. */
  let chosen = null;
  let chosenAvatar = null;
  async function read(file) {
    if (busy) {
      status.textContent = `Your bot is training: stop it to read ${file.name} instead.`;
      return;
    }
    const mine = ++reading;
    chosen = null;
    training.hidden = true;
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
        chosen = file;
        chosenAvatar = got.avatar;
        training.hidden = false;
        progress.textContent = '';
      }
    } catch (e) {
      if (mine !== reading) return;
      status.classList.add('problem');
      status.textContent = e.message;
    }
  }

  const TRAINING = 'create-training';
  trainButton.addEventListener('click', async () => {
    if (!chosen || busy) return;
    busy = true;
    trainButton.disabled = true;
    stopButton.hidden = false;
    bar.hidden = false;
    bar.removeAttribute('value');
    progress.classList.remove('problem');
    progress.textContent = `Getting ${DEFAULT_NAME}…`;
    let plan = null;
    let tokens = 0;
    const onMessage = (d) => {
      if (d.type === 'preparing') progress.textContent = `Measuring ${DEFAULT_NAME} on your posts…`;
      else if (d.type === 'plan') {
        plan = d.plan;
        bar.max = plan.steps;
        bar.value = 0;
      } else if (d.type === 'step') {
        tokens += d.step.tokens;
        bar.value = d.step.step;
        const left = d.seconds / d.step.step * (plan.steps - d.step.step);
        progress.textContent = `Step ${d.step.step} of ${plan.steps} · loss ${d.step.loss.toFixed(2)} · `
          + `${Math.round(tokens / d.seconds)} tokens/s · ${clock(left)} left`;
      } else if (d.type === 'finishing') {
        bar.removeAttribute('value');
        progress.textContent = 'Measuring your bot and writing its card…';
      }
    };
    try {
      const base = modelBase(DEFAULT_MODEL);
      const d = await sharedWorker().request({ type: 'train', widget: TRAINING, file: chosen, base, baseName: DEFAULT_NAME, steps }, onMessage, ['trained']);
      if (d.stopped) {
        progress.textContent = 'Stopped. Your posts are still here: train again when you like.';
        return;
      }
      progress.textContent = 'Keeping your bot in this browser…';
      const id = await saveBot(d.handle, d.files, chosenAvatar);
      location.href = `?${MINE_PARAM}=${encodeURIComponent(id)}`;
    } catch (e) {
      progress.classList.add('problem');
      progress.textContent = e.message;
    } finally {
      busy = false;
      trainButton.disabled = false;
      stopButton.hidden = true;
      bar.hidden = true;
    }
  });
  stopButton.addEventListener('click', () => sharedWorker().tell('stop', TRAINING));

  /** Lists the bots kept in this browser, each with a link and Delete. */
  async function showYours() {
    let ids = [];
    try { ids = await listBots(); } catch { /* no Cache API here */ }
    const list = yours.querySelector('ul');
    list.replaceChildren();
    for (const id of ids) {
      const bot = await keptBot(id);
      if (!bot) continue;
      const card = await sharedWorker().parseCard(await bot.card.arrayBuffer());
      const name = `${card.title || id}${card.handle ? ` (${card.handle})` : ''}`;
      const remove = el('button', { type: 'button', 'aria-label': `Delete ${name}` }, 'Delete');
      remove.addEventListener('click', async () => {
        if (await askToDelete(id, name)) showYours();
      });
      list.append(el('li', {}, el('a', { href: `?${MINE_PARAM}=${encodeURIComponent(id)}` }, name), ' ', remove));
    }
    yours.hidden = !list.children.length;
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
