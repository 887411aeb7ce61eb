//! One integration-test binary (shared helpers in util.rs); each module names the behaviour it checks.

mod util;

mod archive;
mod bad_input;
mod card;
mod cli;
mod dataset;
mod default_bot;
mod generation;
mod gguf;
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
mod kernels;
mod parity;
mod sampling;
mod screen;
mod shortlist;
mod stream;
mod tokenizer;
mod train;
