//! What the weights targets share: a fixture model's config and a small tokenizer, and loading
//! a model whose weights file is the fuzzer's bytes both ways the product does — whole (the
//! CLI) and in pieces (the page's worker), with pieces of a size the input picks.
#![allow(dead_code)]

use botcard::files::all_names;
use botcard::stream::BotLoader;
use botcard::{Bot, Dtype, ModelFiles};

/// A small byte-level BPE (a few hundred tokens, made once per process): the fixtures' own
/// 50,257-token tokenizers take ~100 ms to load, which would leave the fuzzer little time for
/// the weights. The configs allow it: a tokenizer may have fewer tokens than vocab_size.
pub fn small_tokenizer() -> &'static [u8] {
    static JSON: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    JSON.get_or_init(|| {
        let texts = vec!["My dream is to tweet every day about the weather and my cat.".to_owned(); 4];
        botcard::Tokenizer::train_byte_level_bpe(&texts, 300)
            .and_then(|t| t.to_json())
            .expect("a small tokenizer")
            .into_bytes()
    })
}

/// config.json of tiny-st (tests/fixtures/models, made by make_fixtures.py), whose weights
/// seed the safetensors and gguf corpora.
pub const TINY_ST_CONFIG: &[u8] = include_bytes!("../../tests/fixtures/models/tiny-st/config.json");

/// config.json of tiny-2021, whose pytorch_model.bin seeds the torch corpus.
pub const TINY_2021_CONFIG: &[u8] =
    include_bytes!("../../tests/fixtures/models/tiny-2021/config.json");

/// Loads `base` plus `name` = `bytes` whole and streamed; both may fail, neither may panic.
/// The first input byte picks the piece size and the dtype.
pub fn load_with(config: &[u8], name: &str, data: &[u8]) {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let dtype = if pick & 1 == 0 { Dtype::F32 } else { Dtype::Q8_0 };
    let get = |n: &str| match n {
        _ if n == name => Some(bytes),
        botcard::files::CONFIG => Some(config),
        botcard::files::TOKENIZER => Some(small_tokenizer()),
        _ => None,
    };
    let _ = Bot::load(&ModelFiles::from_lookup(get), dtype);
    let piece = 1 + (usize::from(pick >> 1) * 97) % 8192;
    let mut loader = BotLoader::new(dtype);
    for n in all_names() {
        let Some(b) = get(n) else { continue };
        let fed = if botcard::files::streamed(n) {
            std::iter::once(&b[..0])
                .chain(b.chunks(piece))
                .try_for_each(|p| loader.push(n, p))
        } else {
            loader.add(n, b.to_vec())
        };
        if fed.is_err() {
            return;
        }
    }
    let _ = loader.finish();
}
