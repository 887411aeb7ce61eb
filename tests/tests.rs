//! One integration-test binary for the engine; each module mirrors a part of `src/`.

mod util;

mod bad_input;
mod card;
mod cli;
mod dataset;
mod default_bot;
mod generation;
mod parity;
mod sampling;
mod tokenizer;
mod train;
