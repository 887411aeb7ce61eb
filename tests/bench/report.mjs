// Turns the JSON lines of one `./build.sh bench` run into BENCHMARKS.md: the machine, one table
// of every engine's figures, the goals of the speed issue as measured ratios, and the quality of
// each dtype against f32.
//   node tests/bench/report.mjs RESULTS.jsonl MACHINE.json > BENCHMARKS.md
import { readFileSync } from 'node:fs';

const lines = readFileSync(process.argv[2], 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
const machine = JSON.parse(readFileSync(process.argv[3], 'utf8'));

const f = (x, d = 2) => (x === null || x === undefined || Number.isNaN(x) ? '–' : Number(x).toFixed(d));
const mb = (x) => (x ? `${(x / 1e6).toFixed(0)} MB` : '–');
const ours = lines.filter((r) => r.engine?.startsWith('botcard') && r.engine !== 'botcard page' && r.model === 'gpt2-124m');
// The tab as a browser with relaxed-simd runs it (the `pkg` rows are the fallback build's).
const tab = (dtype, threads = 1) => ours.find((r) => r.engine === 'botcard tab' && r.build !== 'pkg' && r.dtype === dtype && r.threads === threads);
const native = (dtype, threads) => ours.find((r) => r.engine === 'botcard native' && r.dtype === dtype && r.threads === threads);
const tjs = lines.filter((r) => r.engine === 'transformers.js' && !r.error);
const torch = lines.filter((r) => r.engine === 'pytorch');
const torchAt = (t) => torch.find((r) => r.threads === t);
const tjsAt = (dtype, threads, origin) => tjs.find((r) => r.dtype === dtype && r.threads === threads && r.origin === origin);
const best = (rows, key, lowest) => rows.filter((r) => r[key] != null).sort((a, b) => (lowest ? a[key] - b[key] : b[key] - a[key]))[0];
// One row per build (each run of browser.mjs measures them all).
const pages = [...new Map(lines.filter((r) => r.kind === 'page_bytes').map((r) => [r.build, r])).values()];
// The largest of the builds a visit may download.
const page = pages.sort((a, b) => b.gzip_bytes - a.gzip_bytes)[0];
const defaultBot = lines.find((r) => r.engine === 'botcard tab' && r.model === 'default');
// The same 124M as most real bots ship it: a 2021-style pytorch_model.bin, loaded cold.
const bin = lines.find((r) => r.engine === 'botcard tab' && r.model === 'gpt2-124m-bin');
// The 124M loaded (safetensors, quantized as it streams) on a few cold visits, for memory.
const load = lines.find((r) => r.engine === 'botcard tab' && r.model === 'gpt2-124m-load');
const quality = lines.filter((r) => r.kind === 'quality');
// Ready on the card page itself (tests/bench/page.mjs): what (d) is about.
const cardPage = (model, rtt = 0) => lines.find((r) => r.engine === 'botcard page' && r.model === model && (r.host_rtt_ms ?? 0) === rtt);
const pageDefault = cardPage('default');
const pageDefaultFar = cardPage('default', 100);
const page124 = cardPage('gpt2-124m');

const out = [];
const p = (s = '') => out.push(s);
p('# Benchmarks');
p();
p(`Written by \`./build.sh bench\` on ${machine.date}. Compare ratios within this file: absolute figures move ±30% between runs and machines.`);
p();
p(`- Machine: ${machine.cpu}, ${machine.nproc} cores, ${machine.memory}; load average at the end of the run ${machine.loadavg}.`);
p(`- botcard ${machine.commit}, ${machine.rustc}; Chromium ${ours.find((r) => r.chromium)?.chromium ?? '–'}, node ${machine.node}.`);
p(`- Model: a randomly initialised GPT-2 124M with the real shapes and vocabulary${machine.model_note ? ` (${machine.model_note})` : ''}.`);
p('- Jobs (tests/bench/jobs.json, as ../shared/peer runs them): prefill = a 64-token prompt to its first token; decode = greedy, 128 new tokens after "My dream is", tok/s = 127 / (time of token 128 − time of token 1); widget job = 5 sequences × 50 new tokens, do_sample, top_k 50, one call. Medians of 3 timed runs after a warm-up.');
p('- Ready: from page open (or process start) to a model that can generate; "cached" is a second visit with the model in the Cache API. Peak memory: the tab\'s renderer process (VmHWM), or the CLI process.');
p(`- Ready on the card page (tests/bench/page.mjs): www/index.html opened in a fresh profile on disk, from navigation to the widget's \`bot-ready\`: the cold first visit, then the second and third visits, which the service worker serves cross-origin isolated (the threaded build), with the model (and the threaded build) cached. Medians of ${pageDefault?.visits?.length ?? '–'} fresh profiles. The site is local, except in the row "the site 100 ms away", where it answers every request 100 ms late. The rows "botcard tab" time a bare page that starts the worker at once.`);
p();
p('## Figures');
p();
p('| engine | dtype | threads | ready s (cached) | prefill tok/s | decode tok/s | widget job s | weights in memory | peak memory |');
p('|---|---|---|---|---|---|---|---|---|');
for (const r of ours) {
  p(`| ${r.engine}${r.build ? ` (${r.build}/)` : ''} | ${r.dtype} | ${r.threads} | ${f(r.ready_cold_s ?? r.ready_s)}${r.ready_cached_s != null ? ` (${f(r.ready_cached_s)})` : ''} | ${f(r.prefill_tok_s, 0)} | ${f(r.decode_tok_s, 1)} | ${f(r.widget_job_s)} | ${mb(r.weight_bytes)} | ${mb(r.peak_memory_bytes)} |`);
}
for (const r of tjs) {
  p(`| transformers.js ${r.origin === 'coi' ? '(cross-origin isolated)' : ''} | ${r.dtype} | ${r.threads} | ${f(r.load_s)} | – | ${f(r.decode_tok_s, 1)} | ${f(r.widget_batch5_s)} | – | – |`);
}
for (const r of torch) {
  p(`| PyTorch native | fp32 | ${r.threads} | ${f(r.load_s)} | – | ${f(r.decode_tok_s, 1)} | ${f(r.widget_batch5_s)} | – | – |`);
}
if (load) p(`| botcard tab, the 124M loaded cold (median of ${load.peak_memory_visits.length} visits) | ${load.dtype} | ${load.threads} | ${f(load.ready_cold_s)} (${f(load.ready_cached_s)}) | – | – | – | ${mb(load.weight_bytes)} | ${mb(load.peak_memory_bytes)} |`);
if (bin) p(`| botcard tab, the 124M as pytorch_model.bin (median of ${bin.peak_memory_visits?.length ?? 1} visits) | ${bin.dtype} | ${bin.threads} | ${f(bin.ready_cold_s)} (${f(bin.ready_cached_s)}) | – | – | – | ${mb(bin.weight_bytes)} | ${mb(bin.peak_memory_bytes)} |`);
if (defaultBot) p(`| botcard tab, default bot | ${defaultBot.dtype} | 1 | ${f(defaultBot.ready_cold_s)} (${f(defaultBot.ready_cached_s)}) | – | – | – | ${mb(defaultBot.weight_bytes)} | ${mb(defaultBot.peak_memory_bytes)} |`);
for (const r of [pageDefault, pageDefaultFar, page124].filter(Boolean)) {
  p(`| botcard card page (index.html), ${r.model === 'default' ? 'default bot' : 'the 124M from a hub'}${r.host_rtt_ms ? `, the site ${r.host_rtt_ms} ms away` : ''}; cold (second visit, third) | q8_0 | 1 (then ${r.build_cached === 'pkg-threads' ? 'all' : '1'}) | ${f(r.ready_cold_s)} (${f(r.ready_cached_s)}, ${f(r.ready_cached_again_s)}) | – | – | – | – | – |`);
}
p();
for (const pb of pages) p(`Page bytes besides the model, gzipped, with ${pb.build}/: ${(pb.gzip_bytes / 1e6).toFixed(2)} MB (${pb.files} files; wasm ${(pb.wasm_gzip_bytes / 1e6).toFixed(2)} MB).`);
p(`Copy bandwidth (bytes read + written per second): native ${f(native('q8_0', 1)?.copy_gb_s ?? native('f32', 1)?.copy_gb_s, 1)} GB/s, in the tab ${f(tab('q8_0')?.copy_gb_s, 1)} GB/s.`);
// What reading alone reaches: a sum over 256 MB split over the threads (in the tab, the page's
// thread, or Web Workers on shared memory as the threaded build's pool), the most weight bytes
// a decode step can read per second.
const readAt = (t) => native('f32', t)?.read_gb_s ?? native('q8_0', t)?.read_gb_s;
const tabReadAt = (t) => (t === 1
  ? tab('f32')?.read_gb_s ?? tab('q8_0')?.read_gb_s
  : tab('f32', t)?.read_threads_gb_s ?? tab('q8_0', t)?.read_threads_gb_s);
p(`Read bandwidth (bytes read per second, a sum over 256 MB): native ${f(readAt(1), 1)} GB/s on 1 thread, ${f(readAt(2), 1)} GB/s on 2; in the tab ${f(tabReadAt(1), 1)} GB/s on 1 thread, ${f(tabReadAt(2), 1)} GB/s on 2 (Web Workers on shared memory).`);
p();

// Goals of the speed issue, each a ratio measured above.
const goals = [];
const goal = (name, measured, target, met) => goals.push({ name, measured, target, met });
// The tab's default dtype (q8_0): the 4-bit files are faster still but write another text.
const tabBestJob = best(ours.filter((r) => r.engine === 'botcard tab' && r.dtype === 'q8_0'), 'widget_job_s', true);
const tjsBestJob = best(tjs, 'widget_batch5_s', true);
if (tabBestJob && tjsBestJob) {
  const r = tabBestJob.widget_job_s / tjsBestJob.widget_batch5_s;
  goal(`(a) widget job, tab (${tabBestJob.dtype}, ${tabBestJob.threads} thread) ÷ transformers.js best (${tjsBestJob.dtype}, ${tjsBestJob.threads} threads${tjsBestJob.origin === 'coi' ? ', isolated' : ''})`, f(r), '≤ 0.50', r <= 0.5);
}
const torch2 = torchAt(2) ?? best(torch, 'threads');
if (tabBestJob && torch2) {
  const r = tabBestJob.widget_job_s / torch2.widget_batch5_s;
  goal(`(a) widget job, tab ÷ PyTorch native ${torch2.threads} threads`, f(r), '≤ 1.00', r <= 1);
}
for (const [ours_, theirs] of [['q8_0', 'q8'], ['f32', 'fp32']]) {
  for (const [a, b, t] of [[tab(ours_), tjsAt(theirs, 1, 'plain'), 1], [tab(ours_, 2), tjsAt(theirs, 2, 'coi'), 2]]) {
    if (!a || !b) continue;
    const r = a.decode_tok_s / b.decode_tok_s;
    goal(`(b) batch-1 decode, tab ${ours_} ÷ transformers.js ${theirs}, ${t} thread${t > 1 ? 's' : ''}`, f(r), '≥ 2.00', r >= 2);
  }
}
for (const t of [1, 2]) {
  const ref = torchAt(t);
  const n = best(ours.filter((r) => r.engine === 'botcard native' && r.threads === t), 'decode_tok_s');
  if (ref && n) {
    const r = n.decode_tok_s / ref.decode_tok_s;
    goal(`(c) CLI ${n.dtype} ÷ PyTorch, batch-1 decode, ${t} thread${t > 1 ? 's' : ''}`, f(r), '≥ 1.00', r >= 1);
    const j = best(ours.filter((r) => r.engine === 'botcard native' && r.threads === t), 'widget_job_s', true);
    const rj = ref.widget_batch5_s / j.widget_job_s;
    goal(`(c) CLI ${j.dtype} widget job speed ÷ PyTorch's, ${t} thread${t > 1 ? 's' : ''}`, f(rj), '≥ 1.00', rj >= 1);
  }
}
const q8tab = tab('q8_0');
if (page124) goal('(d) ready on the card page with a cached 124M (second visit), seconds', f(page124.ready_cached_s), '≤ 2.00', page124.ready_cached_s <= 2);
else if (q8tab) goal('(d) ready with a cached 124M (bare page), seconds', f(q8tab.ready_cached_s), '≤ 2.00', q8tab.ready_cached_s <= 2);
if (pageDefault) goal('(d) ready on the card page with the cached default bot (second visit), seconds', f(pageDefault.ready_cached_s), '≤ 0.30', pageDefault.ready_cached_s <= 0.3);
else if (defaultBot) goal('(d) ready with the cached default bot (bare page), seconds', f(defaultBot.ready_cached_s), '≤ 0.30', defaultBot.ready_cached_s <= 0.3);
if (pageDefaultFar) goal(`(d) the same, the site ${pageDefaultFar.host_rtt_ms} ms away, seconds`, f(pageDefaultFar.ready_cached_s), '≤ 0.30', pageDefaultFar.ready_cached_s <= 0.3);
if (load && defaultBot) {
  const r = (load.peak_memory_bytes - defaultBot.peak_memory_bytes) / load.weight_bytes;
  goal(`(e) tab peak memory loading the 124M's safetensors cold, above the default bot's (${mb(defaultBot.peak_memory_bytes)}, the fixed overhead) ÷ weights in memory`, f(r), '≤ 1.30', r <= 1.3);
}
if (bin && defaultBot) {
  const r = (bin.peak_memory_bytes - defaultBot.peak_memory_bytes) / bin.weight_bytes;
  goal('(e) the same, loading a 2021 pytorch_model.bin (f32, 510 MB) cold', f(r), '≤ 1.30', r <= 1.3);
}
const f32tab = tab('f32');
if (f32tab && defaultBot) {
  const r = (f32tab.peak_memory_bytes - defaultBot.peak_memory_bytes) / f32tab.weight_bytes;
  goal('(e) the same, held as f32 (the 1-thread tab run: its cold load, then its jobs)', f(r), '≤ 1.30', r <= 1.3);
}
for (const r of [q8tab, tab('q8_0', 2), native('q8_0', 1), native('q8_0', 2)].filter(Boolean)) {
  const bound = (r.copy_gb_s * 1e9) / r.weight_bytes;
  const share = r.decode_tok_s / bound;
  goal(`(f) ${r.engine} q8_0 ${r.threads} thread decode ÷ bandwidth bound (${f(bound, 0)} tok/s)`, f(share), '≥ 0.50', share >= 0.5);
}
if (page) goal(`(g) page bytes besides the model, gzipped, MB (with ${page.build}/)`, f(page.gzip_bytes / 1e6), '≤ 1.50', page.gzip_bytes <= 1.5e6);

// Goal (b) at f32 asks for a rate of reading f32 weights that the tab's memory may not give:
// say how much reading it takes, and how much the tab reads on as many threads. A step reads
// the layers and the output matrix's q8_0 screen (the native run says how many bytes: the same
// model).
const readNeeded = [];
for (const t of [1, 2]) {
  const a = tab('f32', t);
  const b = tjsAt('fp32', t, t === 1 ? 'plain' : 'coi');
  const inTab = tabReadAt(t);
  if (!a || !b || !inTab) continue;
  const step = native('f32', t)?.step_read_bytes ?? a.weight_bytes;
  const need = (2 * b.decode_tok_s * step) / 1e9;
  const threads = `${t} thread${t > 1 ? 's' : ''}`;
  readNeeded.push(`- ${threads}: 2 × transformers.js's fp32 decode is ${f(2 * b.decode_tok_s, 1)} tok/s; each token reads ${mb(step)} of weights (f32 layers, and the q8_0 screen of the f32 output matrix), so that is ${f(need, 1)} GB/s (${f((100 * need) / inTab, 0)}% of the bound), where the tab reads at most ${f(inTab, 1)} GB/s on ${threads} (natively ${f(readAt(t), 1)}; the bound: ${f((inTab * 1e9) / step, 1)} tok/s). The tab's f32 decode reads ${f((a.decode_tok_s * step) / 1e9, 1)} GB/s, ${f((100 * a.decode_tok_s * step) / 1e9 / inTab, 0)}% of that.`);
}

p('## Goals');
p();
p('| goal | measured | target | met |');
p('|---|---|---|---|');
for (const g of goals) p(`| ${g.name} | ${g.measured} | ${g.target} | ${g.met ? 'yes' : '**no**'} |`);
p();
if (readNeeded.length) {
  p('What goal (b) at f32 asks of memory:');
  p();
  for (const line of readNeeded) p(line);
  p();
}
for (const r of [load, bin].filter((r) => r?.peak_memory_visits)) {
  p(`Peak memory at load, ${r.model}: ${r.peak_memory_visits.map(mb).join(', ')} on ${r.peak_memory_visits.length} cold visits, each a fresh renderer (the median is in the goal); it moves with when the tab collects the download's garbage.`);
  p();
}
p('## Quality of each dtype against f32');
p();
p('Held-out text: tests/bench/heldout.txt (40 lines the models never saw). Greedy: 32 new tokens after each of the first 20 lines\' first three words.');
p();
p('| model | dtype | max \\|Δ logprob\\| | perplexity (f32) | change | greedy identical | mean common prefix |');
p('|---|---|---|---|---|---|---|');
for (const q of quality) {
  const change = (q.perplexity / q.perplexity_f32 - 1) * 100;
  p(`| ${q.model_name} | ${q.dtype} | ${f(q.max_abs_delta_logprob, 4)} | ${f(q.perplexity, 2)} (${f(q.perplexity_f32, 2)}) | ${change >= 0 ? '+' : ''}${f(change, 2)}% | ${q.greedy_identical}/${q.greedy_prompts} | ${f(q.greedy_mean_common_prefix, 1)} of ${q.greedy_tokens} |`);
}
p();
console.log(out.join('\n'));
