//! config.json and generation_config.json (the input split at its first 0xFF byte): the model
//! config and the generation settings read from them, checked as a generation would.
#![no_main]

use botcard::{Config, GenerationSettings};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (config, generation) = match data.iter().position(|&b| b == 0xFF) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    if let Ok(c) = Config::from_json(config) {
        let _ = c.parameter_count();
        let _ = c.to_hf_json(None);
    }
    if let Ok(s) = GenerationSettings::from_model_files(config, generation) {
        let _ = s.validate();
        let _ = s.describe();
    }
});
