//! GPT-2's byte-level BPE, from `tokenizer.json` or from the older `vocab.json` + `merges.txt`,
//! and a streaming detokenizer that only ever emits whole UTF-8 characters.

use serde_json::{json, Value};

use crate::error::{Error, Result};

mod bpe_json;

/// A GPT-2 tokenizer: HF `tokenizers` for encoding, a byte table for exact decoding.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The raw bytes each id stands for; empty for special tokens, which are never shown.
    token_bytes: Vec<Vec<u8>>,
}

/// The characters GPT-2's `bytes_to_unicode` gives bytes lie below this code point.
const BYTE_CHARS: usize = 256 + 68;

/// GPT-2's `bytes_to_unicode`: every byte gets a printable character, so BPE never sees
/// whitespace or control bytes. Returns the inverse, by code point: the byte a character stands
/// for, or `None`. (An array, not a map: it is read for every character of the vocabulary
/// while a model loads.)
fn unicode_to_byte() -> [Option<u8>; BYTE_CHARS] {
    let mut table = [None; BYTE_CHARS];
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut n = 0;
    for b in 0..=255u8 {
        let c = if printable(b) {
            usize::from(b)
        } else {
            n += 1;
            255 + n
        };
        table[c] = Some(b);
    }
    table
}

impl Tokenizer {
    /// Loads a `tokenizer.json` (what `GPT2TokenizerFast.save_pretrained` writes).
    pub fn from_tokenizer_json(bytes: &[u8]) -> Result<Self> {
        let inner = match bpe_json::read(bytes) {
            Some(inner) => inner,
            None => tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| Error::Tokenizer {
                file: "tokenizer.json",
                reason: format!("cannot be loaded ({e})"),
            })?,
        };
        Self::from_inner(inner, "tokenizer.json")
    }

    /// Builds the same tokenizer as `GPT2TokenizerFast` does from `vocab.json` + `merges.txt`.
    /// The BPE is built directly from the two files' entries, not through a tokenizer.json of
    /// them: that text (a GPT-2's is 2 MB of JSON, parsed back into a second copy) took 46 MB
    /// for a moment, which a tab keeps for good as wasm memory.
    pub fn from_vocab_and_merges(vocab_json: &[u8], merges_txt: &[u8]) -> Result<Self> {
        let bad = |file, reason| Error::Tokenizer { file, reason };
        let vocab: std::collections::HashMap<String, Value> = serde_json::from_slice(vocab_json)
            .map_err(|e| {
                bad(
                    "vocab.json",
                    format!("not a JSON object of token -> id ({e})"),
                )
            })?;
        let mut ids = tokenizers::models::bpe::Vocab::with_capacity(vocab.len());
        for (token, id) in vocab {
            match id.as_u64().and_then(|id| u32::try_from(id).ok()) {
                Some(id) => ids.insert(token, id),
                None => {
                    return Err(bad(
                        "vocab.json",
                        format!("token {token:?} has id {id}, not a number"),
                    ))
                }
            };
        }
        let merges = std::str::from_utf8(merges_txt)
            .map_err(|_| bad("merges.txt", "not UTF-8 text".into()))?;
        let mut pairs = Vec::new();
        for (n, line) in merges.lines().enumerate() {
            if line.starts_with("#version") || line.trim().is_empty() {
                continue;
            }
            match line.split_once(' ') {
                Some((a, b)) if !b.contains(' ') => pairs.push((a.to_owned(), b.to_owned())),
                _ => {
                    return Err(bad(
                        "merges.txt",
                        format!(
                            "line {} is not two tokens separated by a space: {line:?}",
                            n + 1
                        ),
                    ))
                }
            }
        }
        let has_eos = ids.contains_key(EOS);
        let bpe = tokenizers::models::bpe::BPE::builder()
            .vocab_and_merges(ids, pairs)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix(String::new())
            .build()
            .map_err(|e| {
                bad(
                    "merges.txt",
                    format!("vocab.json and merges.txt do not make a BPE ({e})"),
                )
            })?;
        let mut inner = tokenizers::Tokenizer::from_bytes(byte_level_bpe_spec().to_string())
            .map_err(|e| bad("vocab.json", e.to_string()))?;
        inner.with_model(bpe);
        if has_eos {
            // As transformers' converter writes it; its id is the vocabulary's.
            let eos = tokenizers::AddedToken::from(EOS, true).normalized(true);
            inner
                .add_special_tokens([eos])
                .map_err(|e| bad("vocab.json", e.to_string()))?;
        }
        Self::from_inner(inner, "vocab.json")
    }

    /// Learns a GPT-2-style byte-level BPE of at most `vocab_size` tokens (`<|endoftext|>`
    /// included, as a special token) from `texts` — a small vocabulary keeps a small bot small.
    pub fn train_byte_level_bpe(texts: &[String], vocab_size: usize) -> Result<Self> {
        let bad = |reason: String| Error::Tokenizer {
            file: "trained tokenizer",
            reason,
        };
        if vocab_size < 257 {
            return Err(bad(format!(
                "a byte-level vocabulary needs at least 257 tokens, not {vocab_size}"
            )));
        }
        let spec = byte_level_bpe_spec();
        let mut inner =
            tokenizers::Tokenizer::from_bytes(spec.to_string()).map_err(|e| bad(e.to_string()))?;
        let alphabet = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet()
            .into_iter()
            .collect();
        let trainer = tokenizers::models::bpe::BpeTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(vec![tokenizers::AddedToken::from(EOS, true)])
            .initial_alphabet(alphabet)
            .build();
        let mut trainer = tokenizers::models::TrainerWrapper::BpeTrainer(trainer);
        inner
            .train(&mut trainer, texts.iter())
            .map_err(|e| bad(format!("training failed ({e})")))?;
        Self::from_inner(inner, "trained tokenizer")
    }

    fn from_inner(inner: tokenizers::Tokenizer, file: &'static str) -> Result<Self> {
        let size = inner.get_vocab_size(true);
        if size == 0 {
            return Err(Error::Tokenizer {
                file,
                reason: "the vocabulary is empty".into(),
            });
        }
        let table = unicode_to_byte();
        let added = inner.get_added_tokens_decoder();
        // Ids are looked up one by one: the vocabulary as a map (`get_vocab`) would copy and hash
        // every token. A vocabulary of `size` tokens whose ids are not 0..size has one beyond.
        let mut beyond = None;
        let mut token_bytes = Vec::with_capacity(size);
        for id in 0..size as u32 {
            let bytes = match (added.get(&id), inner.id_to_token(id)) {
                (Some(a), _) if a.special => Vec::new(),
                (Some(a), _) => a.content.clone().into_bytes(),
                (None, Some(token)) => {
                    let mut b = Vec::with_capacity(token.len());
                    for c in token.chars() {
                        match table.get(c as usize).copied().flatten() {
                            Some(byte) => b.push(byte),
                            // Not byte-level: keep the character's own UTF-8.
                            None => b.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                        }
                    }
                    b
                }
                (None, None) => {
                    let outside = beyond.get_or_insert_with(|| {
                        let ids = inner.get_vocab(true).into_values();
                        ids.filter(|&i| i as usize >= size).min()
                    });
                    if let Some(id) = outside {
                        return Err(Error::Tokenizer {
                            file,
                            reason: format!("token id {id} is outside the vocabulary"),
                        });
                    }
                    Vec::new()
                }
            };
            token_bytes.push(bytes);
        }
        Ok(Self { inner, token_bytes })
    }

    /// Token ids of `text`; `<|endoftext|>` written in the text is the special token, as in HF.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer {
                file: "tokenizer",
                reason: format!("cannot encode the text ({e})"),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// The vocabulary strings of `ids` (byte-level form, `Ġ` for a space), as HF's
    /// `convert_ids_to_tokens`.
    pub fn id_strings(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| self.inner.id_to_token(id).unwrap_or_default())
            .collect()
    }

    /// The id of a token string, if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// Text of `ids` with special tokens left out (HF `decode(ids, skip_special_tokens=True)`).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut stream = TextStream::default();
        let mut out: String = ids.iter().map(|&id| stream.push(self, id)).collect();
        out.push_str(&stream.finish());
        out
    }

    /// `tokenizer.json` text for this tokenizer (what `botcard convert` writes).
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(|e| Error::Tokenizer {
            file: "tokenizer.json",
            reason: format!("cannot be written ({e})"),
        })
    }

    fn bytes_of(&self, id: u32) -> &[u8] {
        self.token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// GPT-2's end-of-text token, a special token where the vocabulary has it.
const EOS: &str = "<|endoftext|>";

/// The tokenizer.json of a GPT-2 byte-level BPE as transformers' GPT2 converter writes it, with
/// an empty vocabulary and no added tokens: the callers put in the BPE and `<|endoftext|>`.
fn byte_level_bpe_spec() -> Value {
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": {}, "merges": []},
    })
}

/// Turns a stream of token ids into text without ever splitting a UTF-8 character: an emoji
/// spread over three tokens appears once its last byte has arrived. Invalid bytes become U+FFFD,
/// exactly as decoding the whole sequence at once would.
#[derive(Debug, Default, Clone)]
pub struct TextStream {
    pending: Vec<u8>,
}

impl TextStream {
    /// Adds one token; returns the text that is now complete (often empty or one word).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> String {
        self.pending.extend_from_slice(tokenizer.bytes_of(id));
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..good]).expect("valid prefix"));
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..good + bad);
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: bytes of an unfinished character become U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_table_is_gpt2s_bytes_to_unicode() {
        let table = unicode_to_byte();
        let at = |c: char| table.get(c as usize).copied().flatten();
        assert_eq!(at('!'), Some(b'!'));
        assert_eq!(at('~'), Some(b'~'));
        assert_eq!(at('\u{100}'), Some(0x00));
        assert_eq!(at('ĉ'), Some(b'\t'));
        assert_eq!(at('Ċ'), Some(b'\n'));
        assert_eq!(at('Ġ'), Some(b' '));
        assert_eq!(at('Ń'), Some(0xAD));
        assert_eq!(at('ń'), None);
        assert_eq!(at(' '), None);
        let mut bytes: Vec<u8> = table.iter().flatten().copied().collect();
        bytes.sort_unstable();
        assert_eq!(bytes, (0..=255).collect::<Vec<u8>>(), "every byte once");
    }

    #[test]
    fn every_token_stands_for_the_bytes_tokenizers_decodes_it_to() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/www/models/default/tokenizer.json"
        );
        let tok = Tokenizer::from_tokenizer_json(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(tok.vocab_size(), tok.inner.get_vocab_size(true));
        let added = tok.inner.get_added_tokens_decoder();
        let mut checked = 0;
        for id in 0..tok.vocab_size() as u32 {
            let ours = tok.bytes_of(id);
            if added.get(&id).is_some_and(|a| a.special) {
                assert!(ours.is_empty(), "special token {id}");
                continue;
            }
            // Tokens that are part of a character decode to U+FFFD in `tokenizers`.
            if let Ok(text) = std::str::from_utf8(ours) {
                assert_eq!(text, tok.inner.decode(&[id], false).unwrap(), "token {id}");
                checked += 1;
            }
        }
        assert!(checked > tok.vocab_size() * 9 / 10, "{checked} checked");
    }

    #[test]
    fn a_token_id_beyond_the_vocabulary_is_an_error() {
        let mut spec = byte_level_bpe_spec();
        spec["model"]["vocab"] = json!({"a": 0, "b": 5});
        let err = Tokenizer::from_tokenizer_json(spec.to_string().as_bytes())
            .err()
            .expect("an error");
        assert!(
            err.to_string()
                .contains("token id 5 is outside the vocabulary"),
            "{err}"
        );
    }
}
