//! tokenizer.json, or vocab.json + merges.txt (the input split at its first 0xFF byte), then a
//! round trip of a text through the tokenizer made.
#![no_main]

use botcard::Tokenizer;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let made = match data.iter().position(|&b| b == 0xFF) {
        Some(at) => Tokenizer::from_vocab_and_merges(&data[..at], &data[at + 1..]),
        None => Tokenizer::from_tokenizer_json(data),
    };
    if let Ok(t) = made {
        if let Ok(ids) = t.encode("My dream is to tweet 🤖 <|endoftext|> 永井均") {
            let _ = t.decode(&ids);
        }
        let _ = t.decode(&[0, 1, 2, u32::MAX]);
        let _ = t.to_json();
    }
});
