// How long the library takes to read a model folder the first time its WebAssembly runs, file
// by file: what a tab's load after page open costs on top of reading the files, when the code
// is still compiled lazily and not yet optimized (a second load in the same process is much
// quicker, and hides it). Each run is a fresh node process with the plain build (www/pkg/,
// from ./build.sh); the files are read from disk first and handed in as the worker hands them
// (the files the library asks for, in its order; a streamed file in 1 MB pieces). Prints, as
// one JSON line, the median milliseconds of each file and of finish() over RUNS processes.
// Not a test, and not part of the bench.
//   [BUILD=DIR] node tests/bench/cold-load.mjs MODEL_DIR [DTYPE=q8_0] [RUNS=7]
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { median } from './median.mjs';

const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
// BUILD: another plain build's folder (wasm-bindgen --target web), to compare two in one sitting.
const PKG = process.env.BUILD ? resolve(process.env.BUILD) : join(ROOT, 'www/pkg');
const [dir, dtype = 'q8_0', runs = '7', child] = process.argv.slice(2);
if (!dir) throw new Error('usage: node tests/bench/cold-load.mjs MODEL_DIR [DTYPE] [RUNS]');

if (child === 'child') {
  // The bytes first, so that only the library's work is timed.
  const lib = await import(join(PKG, 'botcard.js'));
  await lib.default({ module_or_path: readFileSync(join(PKG, 'botcard_bg.wasm')) });
  const loader = new lib.WasmLoader(dtype);
  const known = {};
  const ms = {};
  for (let name; (name = lib.nextModelFile(known)) !== undefined;) {
    const path = join(dir, name);
    known[name] = existsSync(path);
    if (!known[name]) continue;
    const bytes = readFileSync(path);
    const t = performance.now();
    if (lib.isStreamed(name)) {
      for (let at = 0; at < bytes.length; at += 1 << 20) loader.push(name, bytes.subarray(at, at + (1 << 20)));
    } else {
      loader.add(name, bytes);
    }
    ms[name] = performance.now() - t;
  }
  const t = performance.now();
  loader.finish().free();
  ms['finish()'] = performance.now() - t;
  console.log(JSON.stringify(ms));
} else {
  const all = [];
  for (let i = 0; i < Number(runs); i++) {
    const script = fileURLToPath(import.meta.url);
    all.push(JSON.parse(execFileSync(process.execPath, ['--no-warnings', script, resolve(dir), dtype, '1', 'child']).toString()));
  }
  const stages = Object.fromEntries(Object.keys(all[0]).map((k) => [k, median(all.map((r) => r[k])).toFixed(1)]));
  console.log(JSON.stringify({ model: dir, dtype, runs: all.length, median_ms: stages }));
}
