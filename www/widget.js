// The "My dream is" widget, <bot-widget>, shared by the card page, embed.html and other pages:
// it brings its own styles (shadow DOM + widget.css) and draws its settings form from what the
// worker reports about the model's generation settings.
import { DEFAULT_MODEL, DEFAULT_NAME, hubUrl, modelBase } from './models.js';

/** Attributes that are not generation settings. */
const OWN_ATTRIBUTES = ['model', 'hub', 'prompt', 'class', 'id', 'style', 'dtype'];

/** Talks to one worker with request ids; `on(id, fn)` receives its messages. */
export class WorkerClient {
  constructor() {
    this.worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    this.handlers = new Map();
    this.next = 1;
    this.worker.onmessage = ({ data }) => this.handlers.get(data.id)?.(data);
    this.worker.onerror = (e) => {
      for (const h of this.handlers.values()) h({ type: 'error', message: `The bot could not start (${e.message || 'worker error'}).` });
    };
  }

  /** Sends a request; `onMessage` sees every reply; resolves on the final one. */
  request(msg, onMessage = () => {}, final = ['info', 'card', 'loaded', 'done']) {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.handlers.set(id, (data) => {
        onMessage(data);
        if (data.type === 'error') { this.handlers.delete(id); reject(new Error(data.message)); }
        // A model being cached after it loaded ('loaded' with holding) has one more message,
        // 'held', for onMessage.
        else if (final.includes(data.type)) { if (!data.holding) this.handlers.delete(id); resolve(data); }
        else if (data.type === 'held') this.handlers.delete(id);
      });
      this.worker.postMessage({ ...msg, id });
    });
  }

  /** A model card's bytes, parsed and sanitized by the library; with `keep` (a card that is
   * not private: a hub's), the parse is kept for the next visit. */
  parseCard(bytes, { keep = false } = {}) {
    return this.request({ type: 'card', bytes, keep }).then((d) => d.card);
  }

  /** A person's posts (an X archive, tweets.js, .jsonl or text File), read by the library:
   * `{card, problem, avatar: {bytes, type} | null}`, the card of the bot they would make. */
  readPosts(file) {
    return this.request({ type: 'posts', file }, () => {}, ['posts']);
  }

  /** A bot's folder (`{name: Uint8Array}`) as a zip to download: `{zip, file}` (its name). */
  zipFolder(handle, files) {
    return this.request({ type: 'zip', handle, files }, () => {}, ['zip']);
  }

  /** Facts the library and the worker own that the page uses: the prompt cards open with, the
   * build that runs and the one a cross-origin isolated page would run (`isolatedBuild`). */
  info() {
    this.infoReply ??= this.request({ type: 'info' });
    return this.infoReply;
  }

  /** Fire-and-forget messages about one widget ('stop', 'release'). */
  tell(type, widget) { this.worker.postMessage({ type, widget }); }
}

let sharedClient = null;
/** The page's worker, created on first use and shared by all its widgets. */
export function sharedWorker() {
  sharedClient ??= new WorkerClient();
  return sharedClient;
}

let widgetCount = 0;

/** What a load the widget no longer wants comes to: a page may set `hub` and then `model`, and
 * the answer about the first must not overwrite the second's. */
const SUPERSEDED = Symbol('superseded');

/** An element with attributes (or properties, for non-text values) and children. */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v; else if (k in e && typeof v !== 'string') e[k] = v; else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

async function filesFromDrop(items) {
  const out = [];
  const walk = async (entry) => {
    if (entry.isFile) out.push(await new Promise((res, rej) => entry.file(res, rej)));
    else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
        if (!batch.length) break;
        for (const e of batch) await walk(e);
      }
    }
  };
  for (const item of items) {
    const entry = item.webkitGetAsEntry?.();
    if (entry) await walk(entry);
    else if (item.kind === 'file') out.push(item.getAsFile());
  }
  return out;
}

export class BotWidget extends HTMLElement {
  static get observedAttributes() { return ['model', 'prompt', 'hub', 'dtype']; }

  constructor() {
    super();
    /** Setting overrides by HF name, as text: from the page's URL, or the element's attributes. */
    this.params = {};
    this.client = null;
    this.loaded = null;
    this.busy = false;
    this.widgetId = `w${++widgetCount}`;
  }

  connectedCallback() {
    if (this.built) {
      if (this.released) { this.released = false; this.start(); }
      return;
    }
    this.built = true;
    this.client ??= sharedWorker();
    for (const a of this.getAttributeNames()) {
      if (!OWN_ATTRIBUTES.includes(a)) this.params[a] ??= this.getAttribute(a);
    }
    const root = this.attachShadow({ mode: 'open' });
    const prompt = el('textarea', { 'aria-label': 'Prompt', rows: 3, class: 'prompt' });
    prompt.value = this.getAttribute('prompt') ?? '';
    // data-build names the WebAssembly build that runs (for tests and bug reports).
    this.client.info().then((d) => {
      this.dataset.build = d.build;
      if (!this.hasAttribute('prompt') && !prompt.value) prompt.value = d.prompt;
    }, () => {});
    prompt.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); this.compute(); }
    });
    const compute = el('button', { type: 'button', class: 'compute' }, 'Compute');
    compute.addEventListener('click', () => this.compute());
    const stop = el('button', { type: 'button', class: 'stop', disabled: true }, 'Stop');
    stop.addEventListener('click', () => this.client.tell('stop', this.widgetId));
    const grid = el('div', { class: 'settings-grid' });
    const settings = el('details', { class: 'settings' }, el('summary', {}, 'Settings'), grid);
    const picker = el('input', { type: 'file', multiple: true, webkitdirectory: true, hidden: true });
    picker.addEventListener('change', () => this.loadLocal(picker.files));
    const local = el('button', { type: 'button', class: 'local' }, 'Use local files');
    local.addEventListener('click', () => picker.click());
    const progress = el('progress', { class: 'progress', hidden: true, 'aria-label': 'Model download' });
    const status = el('p', { class: 'status', role: 'status' });
    // What is worth knowing beside the status line, which each step overwrites: a model that
    // could not be kept for offline use.
    const note = el('p', { class: 'note', hidden: true });
    const samples = el('ol', { 'aria-label': 'Generated samples', class: 'samples' });
    const recover = el('div', { class: 'recover', hidden: true });
    root.append(
      el('link', { rel: 'stylesheet', href: new URL('./widget.css', import.meta.url).href }),
      el('div', { class: 'bot-widget', part: 'widget' },
        prompt,
        el('div', { class: 'actions' }, compute, stop, local, picker),
        settings, progress, status, note, recover, samples),
    );
    this.addEventListener('dragover', (e) => { e.preventDefault(); this.classList.add('drop'); });
    this.addEventListener('dragleave', () => this.classList.remove('drop'));
    this.addEventListener('drop', async (e) => {
      e.preventDefault();
      this.classList.remove('drop');
      try { this.loadLocal(await filesFromDrop([...e.dataTransfer.items])); } catch (err) { this.fail(err); }
    });
    this.ui = { prompt, compute, stop, local, grid, inputs: {}, picker, progress, status, note, samples, recover };
    this.start();
  }

  /** Loads its model: the files set with `useFiles` before it was shown, else its model's. */
  start() {
    if (this.ownFiles) this.loadLocal(Object.values(this.ownFiles.files), this.ownFiles.label);
    else this.load();
  }

  /** Makes the widget run the model of `files` (`{name: File}`; a bot kept in this browser),
   * called `label` in its status line, instead of a model by name. Call before it is shown. */
  useFiles(files, label) {
    this.ownFiles = { files, label };
  }

  disconnectedCallback() {
    // The worker frees the model once no widget shows it.
    this.client?.tell('release', this.widgetId);
    this.released = true;
    this.loaded = null;
  }

  attributeChangedCallback(name, old, value) {
    if (!this.built || old === value) return;
    if (name === 'prompt') { this.ui.prompt.value = value ?? ''; return; }
    // Attributes set together (hub, then model) make one load, of the model they name together.
    this.loaded = null;
    if (this.reloading) return;
    this.reloading = true;
    queueMicrotask(() => {
      this.reloading = false;
      if (!this.loaded) this.load();
    });
  }

  get model() { return this.getAttribute('model') || DEFAULT_MODEL; }
  /** How the weights are held (`f32`, `q8_0`); the library's default when unset. */
  get dtype() { return this.getAttribute('dtype') || undefined; }

  say(text) { this.ui.status.textContent = text; }

  /** Shows `text` in the note line, or hides it (null). */
  note(text) {
    this.ui.note.textContent = text ?? '';
    this.ui.note.hidden = !text;
  }

  /** One sentence, and the ways out: the default bot or local files. */
  fail(err) {
    const message = (err && err.message) || String(err);
    this.say(message);
    this.ui.progress.hidden = true;
    this.setBusy(false);
    const r = this.ui.recover;
    r.replaceChildren();
    if (this.model !== DEFAULT_MODEL) {
      const b = el('button', { type: 'button' }, 'Use the default bot');
      b.addEventListener('click', () => { this.removeAttribute('hub'); this.setAttribute('model', DEFAULT_MODEL); });
      r.append(b);
    }
    const l = el('button', { type: 'button' }, 'Use local files');
    l.addEventListener('click', () => this.ui.picker.click());
    r.append(l);
    r.hidden = false;
    // One "Use local files" at a time: the one beside the ways out.
    this.ui.local.hidden = true;
  }

  setBusy(busy) {
    this.busy = busy;
    this.ui.compute.disabled = busy;
    this.ui.stop.disabled = !busy;
  }

  onProgress(d) {
    if (d.type === 'held' && d.message) this.note(d.message);
    if (d.type !== 'progress') return;
    const p = this.ui.progress;
    p.hidden = false;
    if (d.total) { p.max = d.total; p.value = d.loaded; } else p.removeAttribute('value');
    const mb = (n) => (n / 1e6).toFixed(1);
    this.say(`Downloading ${d.file}: ${mb(d.loaded)}${d.total ? ` of ${mb(d.total)}` : ''} MB`);
  }

  /** The settings form, drawn from the settings the worker reported for this model. Values the
   * person typed, or that came from the URL or attributes, stay; the model's values are the
   * placeholders (and the checkboxes' starting state). */
  drawSettings(settings) {
    const old = this.ui.inputs;
    const inputs = {};
    const grid = this.ui.grid;
    grid.replaceChildren();
    for (const s of settings) {
      if (!s.form) continue;
      const given = old[s.name] ? undefined : this.params[s.name];
      let input;
      if (s.kind === 'bool') {
        // `s.value` already holds a value given by URL or attribute, as the library read it.
        input = el('input', { type: 'checkbox', name: s.name });
        input.checked = old[s.name] ? old[s.name].checked : s.value === true;
        grid.append(el('label', { class: 'check', title: s.help }, input, s.label));
      } else {
        const number = s.kind === 'int' || s.kind === 'float';
        input = el('input', number
          ? { type: 'number', name: s.name, step: s.kind === 'int' ? '1' : 'any', inputmode: s.kind === 'int' ? 'numeric' : 'decimal' }
          : { type: 'text', name: s.name });
        input.value = old[s.name] ? old[s.name].value : given ?? '';
        input.placeholder = s.placeholder;
        grid.append(el('label', { title: s.help }, s.label, input));
      }
      inputs[s.name] = input;
    }
    this.ui.inputs = inputs;
    this.settingNames = settings.map((s) => s.name);
  }

  afterLoad(d, what) {
    this.ui.progress.hidden = true;
    this.ui.recover.hidden = true;
    this.ui.local.hidden = false;
    this.drawSettings(d.settings);
    // data-weights names what the weights are held as (f32, q8_0, or a model.gguf's q4_0/q4k).
    this.dataset.weights = d.heldAs;
    const size = d.bytes ? ` (${(d.bytes / 1e6).toFixed(1)} MB in ${d.seconds.toFixed(1)} s)` : '';
    this.say(`${what} is ready${size}. Press Compute.`);
    this.note(d.notStored);
    this.dispatchEvent(new CustomEvent('bot-ready', { detail: d }));
  }

  /** Loads the model its attributes name; the promise rejects (handled) when it fails. */
  load() {
    if (!this.ui) return Promise.resolve();
    let base;
    try {
      base = modelBase(this.model, hubUrl(this.getAttribute('hub')));
    } catch (e) {
      this.fail(e);
      const failed = Promise.reject(e);
      failed.catch(() => {});
      return failed;
    }
    const name = this.model === DEFAULT_MODEL ? DEFAULT_NAME : this.model;
    this.say(`Loading ${name}…`);
    this.note(null);
    // Stop also stops a download.
    this.ui.stop.disabled = false;
    const request = this.client.request({ type: 'load', widget: this.widgetId, base, dtype: this.dtype, params: this.params }, (d) => this.onProgress(d));
    return this.track(request, this.model === DEFAULT_MODEL ? `${DEFAULT_NAME[0].toUpperCase()}${DEFAULT_NAME.slice(1)}` : this.model);
  }

  loadLocal(fileList, label = 'The local model') {
    // Every picked file by name (File objects are handles: the worker reads only the files the
    // library asks for); the first of two same-named files wins.
    const files = {};
    for (const f of fileList) files[f.name] ??= f;
    this.say('Loading local files…');
    return this.track(this.client.request({ type: 'load', widget: this.widgetId, files, dtype: this.dtype, params: this.params }), label);
  }

  /** Makes the worker's answer to load `request` the widget's model, called `what` once ready,
   * unless another load was asked for since: then it comes to SUPERSEDED and shows nothing. */
  track(request, what) {
    const loading = request.then(
      (d) => {
        if (this.loaded !== loading) return SUPERSEDED;
        this.afterLoad(d, what);
        return d;
      },
      (e) => {
        if (this.loaded !== loading) return SUPERSEDED;
        this.loaded = null;
        this.fail(e);
        throw e;
      },
    ).finally(() => { if (this.loaded === loading) this.ui.stop.disabled = !this.busy; });
    loading.catch(() => {});
    this.loaded = loading;
    return loading;
  }

  /** Overrides by setting name: the form's filled fields and checkboxes, and the URL's or
   * attributes' values of settings the form does not show. Blank fields are left out, so the
   * model's value applies (a blank seed draws a random one). */
  overrides() {
    const o = {};
    for (const name of this.settingNames || []) {
      const input = this.ui.inputs[name];
      if (input?.type === 'checkbox') o[name] = input.checked;
      else if (input) { if (input.value.trim() !== '') o[name] = input.value; }
      else if (this.params[name] !== undefined) o[name] = String(this.params[name]);
    }
    return o;
  }

  async compute() {
    if (this.busy) return;
    this.setBusy(true);
    // The model it runs is the last one asked for, however often that changes while it loads.
    for (;;) {
      try {
        if (await (this.loaded ?? this.load()) !== SUPERSEDED) break;
      } catch { return; } // fail() said why and freed the buttons
    }
    const prompt = this.ui.prompt.value;
    const params = this.overrides();
    const items = [];
    const texts = [];
    this.ui.samples.replaceChildren();
    this.say('Writing…');
    try {
      const done = await this.client.request({ type: 'generate', widget: this.widgetId, prompt, params }, (d) => {
        if (d.type === 'started') {
          for (let i = 0; i < d.sequences; i++) {
            texts.push(prompt);
            items.push(this.ui.samples.appendChild(el('li', {}, prompt)));
          }
        } else if (d.type === 'tokens') {
          for (const t of d.tokens) {
            texts[t.sequence] += t.text;
            items[t.sequence].textContent = texts[t.sequence];
          }
        }
      });
      const rate = done.seconds > 0 ? (done.tokens / done.seconds).toFixed(1) : '–';
      this.say(`${done.stopped ? 'Stopped' : 'Done'}: ${done.tokens} tokens at ${rate} tokens/s${done.threads > 1 ? ` on ${done.threads} threads` : ''}${done.seed != null ? ` (seed ${done.seed})` : ''}.`);
      this.dispatchEvent(new CustomEvent('bot-done', { detail: done }));
    } catch (e) {
      this.say(e.message);
    } finally {
      this.setBusy(false);
    }
  }
}

customElements.define('bot-widget', BotWidget);

/** A widget configured from URL parameters: model, hub, prompt, and generation settings by
 * their HF names (the worker's settings list decides which names count). */
export function widgetFromUrl(params) {
  const w = document.createElement('bot-widget');
  for (const [k, v] of params) {
    if (['model', 'hub', 'prompt', 'dtype'].includes(k)) w.setAttribute(k, v);
    else w.params[k] = v;
  }
  return w;
}
