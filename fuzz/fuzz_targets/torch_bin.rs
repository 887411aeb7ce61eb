//! pytorch_model.bin in place of a fixture model's weights, loaded whole and streamed.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::load_with(common::TINY_2021_CONFIG, "pytorch_model.bin", data));
