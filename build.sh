#!/usr/bin/env bash
# botcard's one entry point.
#   ./build.sh          build the CLI and the web page (www/pkg/, www/models/default/)
#   ./build.sh serve    build, then serve www/ on http://127.0.0.1:8080
#   ./build.sh test     build, then run every test: cargo tests and the browser tests
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n== %s\n' "$*"; }

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
  # .cargo/config.toml turns on simd128 for this target.
  cargo build --lib --release --target wasm32-unknown-unknown
  wasm-bindgen --target web --no-typescript --out-dir www/pkg \
    target/wasm32-unknown-unknown/release/botcard.wasm

  step "default bot"
  # Until the trained default bot lands (issue 4), the page opens on the tiny fixture model.
  for f in config.json generation_config.json model.safetensors tokenizer.json; do
    cp tests/fixtures/models/tiny-st/$f www/models/default/$f
  done
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

  step "page tests in headless Chromium"
  [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund
  node --test tests/e2e/
}

case "${1:-build}" in
  build) build ;;
  serve) build; serve ;;
  test) build; run_tests ;;
  *) echo "usage: ./build.sh [build|serve|test]" >&2; exit 2 ;;
esac
