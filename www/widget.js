// The "My dream is" widget, shared by the card page, embed.html and <bot-widget>.
import { DEFAULT_MODEL, hubUrl, modelBase } from './models.js';

/** Settings the widget exposes, with the URL / HF parameter names. */
const SETTINGS = [
  ['max_new_tokens', 'Max new tokens', 'int'],
  ['min_new_tokens', 'Min new tokens', 'int'],
  ['temperature', 'Temperature', 'float'],
  ['top_k', 'Top k', 'int'],
  ['top_p', 'Top p', 'float'],
  ['repetition_penalty', 'Repetition penalty', 'float'],
  ['num_return_sequences', 'Samples', 'int'],
  ['seed', 'Seed', 'int'],
];

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
  request(msg, onMessage = () => {}, final = ['card', 'loaded', 'done']) {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.handlers.set(id, (data) => {
        onMessage(data);
        if (data.type === 'error') { this.handlers.delete(id); reject(new Error(data.message)); }
        else if (final.includes(data.type)) { this.handlers.delete(id); resolve(data); }
      });
      this.worker.postMessage({ ...msg, id }, msg.transfer || []);
    });
  }

  renderCard(bytes) {
    return this.request({ type: 'card', bytes }).then((d) => d.card);
  }

  stop() { this.worker.postMessage({ type: 'stop' }); }
}

let sharedClient = null;
/** The page's worker, created on first use. */
export function sharedWorker() {
  sharedClient ??= new WorkerClient();
  return sharedClient;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v; else if (k in e && typeof v !== 'string') e[k] = v; else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

function parseSetting(kind, raw) {
  if (raw === null || raw === undefined || String(raw).trim() === '') return undefined;
  const n = kind === 'int' ? Number.parseInt(raw, 10) : Number.parseFloat(raw);
  return Number.isFinite(n) ? n : undefined;
}

/** Reads a model folder chosen with the picker or dropped on the widget. */
async function readLocalFiles(fileList) {
  const wanted = new Set(['config.json', 'generation_config.json', 'model.safetensors', 'pytorch_model.bin', 'tokenizer.json', 'vocab.json', 'merges.txt']);
  const files = {};
  for (const f of fileList) {
    if (wanted.has(f.name)) files[f.name] = await f.arrayBuffer();
  }
  if (!files['config.json']) throw new Error('The chosen folder has no config.json.');
  return files;
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
  static get observedAttributes() { return ['model', 'prompt', 'hub']; }

  constructor() {
    super();
    /** Overrides from the page's URL or the embedder (HF names). */
    this.params = {};
    this.client = null;
    this.loaded = null;
    this.busy = false;
  }

  connectedCallback() {
    if (this.built) return;
    this.built = true;
    this.client ??= sharedWorker();
    this.classList.add('bot-widget');
    const prompt = el('textarea', { 'aria-label': 'Prompt', rows: 3, class: 'prompt' });
    prompt.value = this.getAttribute('prompt') ?? 'My dream is';
    prompt.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); this.compute(); }
    });
    const compute = el('button', { type: 'button', class: 'compute' }, 'Compute');
    compute.addEventListener('click', () => this.compute());
    const stop = el('button', { type: 'button', class: 'stop', disabled: true }, 'Stop');
    stop.addEventListener('click', () => this.client.stop());
    const inputs = {};
    const grid = el('div', { class: 'settings-grid' });
    for (const [name, label, kind] of SETTINGS) {
      const input = el('input', { type: 'number', name, step: kind === 'int' ? '1' : 'any', inputmode: kind === 'int' ? 'numeric' : 'decimal' });
      const v = this.params[name];
      if (v !== undefined) input.value = v;
      inputs[name] = input;
      grid.append(el('label', {}, label, input));
    }
    const doSample = el('input', { type: 'checkbox', name: 'do_sample' });
    inputs.do_sample = doSample;
    grid.append(el('label', { class: 'check' }, doSample, 'Sample (off: greedy)'));
    const settings = el('details', { class: 'settings' }, el('summary', {}, 'Settings'), grid);
    const picker = el('input', { type: 'file', multiple: true, webkitdirectory: true, hidden: true });
    picker.addEventListener('change', () => this.loadLocal(picker.files));
    const local = el('button', { type: 'button', class: 'local' }, 'Use local files');
    local.addEventListener('click', () => picker.click());
    const progress = el('progress', { class: 'progress', hidden: true, 'aria-label': 'Model download' });
    const status = el('p', { class: 'status', role: 'status' });
    const samples = el('ol', { 'aria-label': 'Generated samples', class: 'samples' });
    const recover = el('div', { class: 'recover', hidden: true });
    this.append(
      prompt,
      el('div', { class: 'actions' }, compute, stop, local, picker),
      settings, progress, status, recover, samples,
    );
    this.addEventListener('dragover', (e) => { e.preventDefault(); this.classList.add('drop'); });
    this.addEventListener('dragleave', () => this.classList.remove('drop'));
    this.addEventListener('drop', async (e) => {
      e.preventDefault();
      this.classList.remove('drop');
      try { this.loadLocal(await filesFromDrop([...e.dataTransfer.items])); } catch (err) { this.fail(err); }
    });
    this.ui = { prompt, compute, stop, inputs, progress, status, samples, recover };
    if (this.params.do_sample !== undefined) doSample.checked = this.params.do_sample;
    this.load();
  }

  attributeChangedCallback(name, old, value) {
    if (!this.built || old === value) return;
    if (name === 'prompt') this.ui.prompt.value = value ?? '';
    else { this.loaded = null; this.load(); }
  }

  get model() { return this.getAttribute('model') || DEFAULT_MODEL; }

  say(text) { this.ui.status.textContent = text; }

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
    l.addEventListener('click', () => this.querySelector('input[type=file]').click());
    r.append(l);
    r.hidden = false;
  }

  setBusy(busy) {
    this.busy = busy;
    this.ui.compute.disabled = busy;
    this.ui.stop.disabled = !busy;
  }

  onProgress(d) {
    if (d.type !== 'progress') return;
    const p = this.ui.progress;
    p.hidden = false;
    if (d.total) { p.max = d.total; p.value = d.loaded; } else p.removeAttribute('value');
    const mb = (n) => (n / 1e6).toFixed(1);
    this.say(`Downloading ${d.file}: ${mb(d.loaded)}${d.total ? ` of ${mb(d.total)}` : ''} MB`);
  }

  afterLoad(d, what) {
    this.ui.progress.hidden = true;
    this.ui.recover.hidden = true;
    this.defaults = d.defaults;
    const i = this.ui.inputs;
    const def = d.defaults;
    const placeholder = {
      max_new_tokens: def.max_new_tokens ?? `${def.max_length} − prompt`,
      min_new_tokens: def.min_new_tokens ?? `${def.min_length} − prompt`,
      temperature: def.temperature, top_k: def.top_k, top_p: def.top_p,
      repetition_penalty: def.repetition_penalty, num_return_sequences: def.num_return_sequences, seed: 'random',
    };
    for (const [k, v] of Object.entries(placeholder)) i[k].placeholder = String(v);
    if (this.params.do_sample === undefined) i.do_sample.checked = def.do_sample;
    const size = d.bytes ? ` (${(d.bytes / 1e6).toFixed(1)} MB in ${d.seconds.toFixed(1)} s)` : '';
    this.say(`${what} is ready${size}. Press Compute.`);
    this.dispatchEvent(new CustomEvent('bot-ready', { detail: d }));
  }

  load() {
    if (!this.ui) return Promise.resolve();
    let base;
    try { base = modelBase(this.model, hubUrl(this.getAttribute('hub'))); } catch (e) { this.fail(e); return Promise.resolve(); }
    this.say(`Loading ${this.model === DEFAULT_MODEL ? 'the default bot' : this.model}…`);
    this.loaded = this.client.request({ type: 'load', base }, (d) => this.onProgress(d))
      .then((d) => this.afterLoad(d, this.model === DEFAULT_MODEL ? 'The default bot' : this.model))
      .catch((e) => { this.loaded = null; this.fail(e); throw e; });
    this.loaded.catch(() => {});
    return this.loaded;
  }

  async loadLocal(fileList) {
    try {
      const files = await readLocalFiles(fileList);
      this.say('Loading local files…');
      this.loaded = this.client.request({ type: 'load', files, transfer: Object.values(files) })
        .then((d) => this.afterLoad(d, 'The local model'));
      await this.loaded;
    } catch (e) {
      this.loaded = null;
      this.fail(e);
    }
  }

  overrides() {
    const o = {};
    for (const [name, , kind] of SETTINGS) {
      const v = parseSetting(kind, this.ui.inputs[name].value);
      if (v !== undefined) o[name] = v;
    }
    o.do_sample = this.ui.inputs.do_sample.checked;
    if (o.seed === undefined) o.seed = Math.floor(Math.random() * 2 ** 31);
    return o;
  }

  async compute() {
    if (this.busy) return;
    if (!this.loaded) this.load();
    this.setBusy(true);
    try {
      await this.loaded;
    } catch { return; }
    const prompt = this.ui.prompt.value;
    const params = this.overrides();
    const items = [];
    const texts = [];
    this.ui.samples.replaceChildren();
    this.say('Writing…');
    try {
      const done = await this.client.request({ type: 'generate', prompt, params }, (d) => {
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
      this.say(`${done.stopped ? 'Stopped' : 'Done'}: ${done.tokens} tokens at ${rate} tokens/s (seed ${params.seed}).`);
      this.dispatchEvent(new CustomEvent('bot-done', { detail: done }));
    } catch (e) {
      this.say(e.message);
    } finally {
      this.setBusy(false);
    }
  }
}

customElements.define('bot-widget', BotWidget);

/** A widget configured from URL parameters: model, hub, prompt, and the generation settings. */
export function widgetFromUrl(params) {
  const w = document.createElement('bot-widget');
  for (const a of ['model', 'hub', 'prompt']) if (params.has(a)) w.setAttribute(a, params.get(a));
  for (const [name, , kind] of SETTINGS) {
    const v = parseSetting(kind, params.get(name));
    if (v !== undefined) w.params[name] = v;
  }
  if (params.has('do_sample')) w.params.do_sample = !['false', '0', 'no'].includes(params.get('do_sample').toLowerCase());
  return w;
}
