//! A quicker reader for the usual `tokenizer.json`, whose model is a BPE. `tokenizers`' own
//! reader copies the model through two generic trees (serde's `Content` for an untagged enum,
//! then a `serde_json::Value`) before its BPE reader copies it once more; for a bot's vocabulary
//! that was most of the tokenizer's load, and the tokenizer most of a cached small bot's load
//! in the tab. Here the BPE's vocabulary and merges are read straight into `tokenizers`' own
//! builder, and everything else (normalizer, pre-tokenizer, post-processor, decoder, added
//! tokens) is still read and applied by `tokenizers`, in the order its reader applies them.
//!
//! [`read`] answers `None` for anything it does not read exactly as `tokenizers` would (a
//! model of another type, merges of unusual form, a file that does not load): the caller then
//! uses `tokenizers`' reader, which also says what is wrong with a broken file.

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::AddedToken;

/// The model of a `tokenizer.json`: the fields `tokenizers`' BPE reader takes (it ignores
/// others, and so does serde here).
#[derive(Deserialize)]
struct BpeModel {
    #[serde(rename = "type")]
    kind: Option<String>,
    dropout: Option<f32>,
    unk_token: Option<String>,
    continuing_subword_prefix: Option<String>,
    end_of_word_suffix: Option<String>,
    fuse_unk: Option<bool>,
    byte_fallback: Option<bool>,
    ignore_merges: Option<bool>,
    vocab: Vocab,
    merges: Vec<Merge>,
}

/// One merge, in either form `tokenizers` writes: `"a b"` (older files) or `["a", "b"]`.
enum Merge {
    Line(String),
    Pair(String, String),
}

impl<'de> Deserialize<'de> for Merge {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MergeVisitor;
        impl<'de> Visitor<'de> for MergeVisitor {
            type Value = Merge;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a merge: \"a b\" or [\"a\", \"b\"]")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Merge, E> {
                Ok(Merge::Line(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Merge, E> {
                Ok(Merge::Line(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Merge, A::Error> {
                let mut next = || {
                    seq.next_element::<String>()?
                        .ok_or_else(|| serde::de::Error::custom("a merge of fewer than 2"))
                };
                let (a, b) = (next()?, next()?);
                if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(serde::de::Error::custom("a merge of more than 2"));
                }
                Ok(Merge::Pair(a, b))
            }
        }
        d.deserialize_any(MergeVisitor)
    }
}

/// An entry of `added_tokens`: its id (which `tokenizers` only checks against the vocabulary's)
/// and the token.
#[derive(Deserialize)]
struct Added {
    #[allow(dead_code)] // required, as by `tokenizers`
    id: u32,
    #[serde(flatten)]
    token: AddedToken,
}

/// The merges as pairs, where `tokenizers` would read them alike: all of one form, and each
/// line of two parts (no `#version` line, which its reader skips).
fn pairs(merges: Vec<Merge>) -> Option<Vec<(String, String)>> {
    let lines = matches!(merges.first(), Some(Merge::Line(_)));
    merges
        .into_iter()
        .map(|m| match m {
            Merge::Pair(a, b) if !lines => Some((a, b)),
            Merge::Line(l) if lines && !l.starts_with("#version") => {
                let (a, b) = l.split_once(' ')?;
                (!b.contains(' ')).then(|| (a.to_owned(), b.to_owned()))
            }
            _ => None,
        })
        .collect()
}

/// The BPE of `model`, built as `tokenizers`' BPE reader builds it.
fn bpe(model: BpeModel) -> Option<BPE> {
    if model.kind.as_deref() != Some("BPE") {
        return None;
    }
    let mut builder = BPE::builder();
    if let Some(d) = model.dropout {
        builder = builder.dropout(d);
    }
    if let Some(u) = model.unk_token {
        builder = builder.unk_token(u);
    }
    if let Some(p) = model.continuing_subword_prefix {
        builder = builder.continuing_subword_prefix(p);
    }
    if let Some(s) = model.end_of_word_suffix {
        builder = builder.end_of_word_suffix(s);
    }
    if let Some(f) = model.fuse_unk {
        builder = builder.fuse_unk(f);
    }
    if let Some(b) = model.byte_fallback {
        builder = builder.byte_fallback(b);
    }
    if let Some(i) = model.ignore_merges {
        builder = builder.ignore_merges(i);
    }
    builder
        .vocab_and_merges(model.vocab, pairs(model.merges)?)
        .build()
        .ok()
}

/// The top level of a `tokenizer.json`: the model and the added tokens read as they come (not
/// first kept as text and then read again: a GPT-2's model is 2 MB of JSON), and the other parts
/// as their text, for `tokenizers`' reader. A key given twice is an error, as in that reader.
struct Top<'a> {
    model: Option<BpeModel>,
    added: Option<Vec<Added>>,
    rest: Vec<(&'a str, &'a RawValue)>,
}

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TopVisitor;
        impl<'de> Visitor<'de> for TopVisitor {
            type Value = Top<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a tokenizer.json object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
                let mut top = Top {
                    model: None,
                    added: None,
                    rest: Vec::new(),
                };
                while let Some(key) = map.next_key::<&'de str>()? {
                    let seen = match key {
                        "model" => top.model.is_some(),
                        "added_tokens" => top.added.is_some(),
                        _ => top.rest.iter().any(|(k, _)| *k == key),
                    };
                    if seen {
                        return Err(serde::de::Error::custom(format!("duplicate field `{key}`")));
                    }
                    match key {
                        "model" => top.model = Some(map.next_value()?),
                        "added_tokens" => top.added = Some(map.next_value()?),
                        _ => top.rest.push((key, map.next_value()?)),
                    }
                }
                Ok(top)
            }
        }
        d.deserialize_map(TopVisitor)
    }
}

/// `bytes` (a `tokenizer.json`) as `tokenizers::Tokenizer::from_bytes` reads it, where its
/// model is a BPE this reader takes; `None` otherwise.
pub(super) fn read(bytes: &[u8]) -> Option<tokenizers::Tokenizer> {
    let text = std::str::from_utf8(bytes).ok()?;
    let top: Top = serde_json::from_str(text).ok()?;
    // The rest of the file, read by `tokenizers` with an empty BPE in place of the model (its
    // reader adds the added tokens after the model, whose vocabulary gives them their ids).
    let mut rest = String::from(r#"{"model":{"type":"BPE","vocab":{},"merges":[]}"#);
    for (key, value) in &top.rest {
        rest.push(',');
        rest.push_str(&serde_json::to_string(key).ok()?);
        rest.push(':');
        rest.push_str(value.get());
    }
    rest.push('}');
    let mut inner = tokenizers::Tokenizer::from_bytes(rest.as_bytes()).ok()?;
    inner.with_model(bpe(top.model?)?);
    inner
        .add_tokens(top.added.unwrap_or_default().into_iter().map(|a| a.token))
        .ok()?;
    Some(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tokenizer written back as tokenizer.json (every part, each added token's id and
    /// flags, the vocabulary and merges in order), and its ids for a text.
    type Seen = (String, Vec<u32>);

    /// What this reader (if it reads `json`) and `tokenizers`' reader make of it.
    fn both(json: &str) -> (Option<Seen>, Seen) {
        let text = "Hello world!  <|endoftext|> It's 2021 — ünïcode 🤖 <|endoftext|>";
        let look = |t: tokenizers::Tokenizer| {
            let ids = t.encode(text, false).unwrap().get_ids().to_vec();
            (t.to_string(false).unwrap(), ids)
        };
        let fast = read(json.as_bytes()).map(look);
        let slow = look(tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap());
        (fast, slow)
    }

    fn fixture(path: &str) -> String {
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
            .unwrap()
    }

    #[test]
    fn reads_the_committed_tokenizers_as_tokenizers_does() {
        for path in [
            "www/models/default/tokenizer.json",
            "tests/fixtures/models/tiny-st/tokenizer.json",
            "tests/fixtures/models/relu-st/tokenizer.json",
        ] {
            let (fast, slow) = both(&fixture(path));
            assert_eq!(fast.expect(path), slow, "{path}");
        }
    }

    /// The default bot's tokenizer.json, edited by `edit`.
    fn edited(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v: serde_json::Value =
            serde_json::from_str(&fixture("www/models/default/tokenizer.json")).unwrap();
        edit(&mut v);
        v.to_string()
    }

    #[test]
    fn reads_every_bpe_setting_and_added_token_as_tokenizers_does() {
        let cases: Vec<(&str, String)> = vec![
            (
                "merges as lines",
                edited(|v| {
                    let lines = v["model"]["merges"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| {
                            format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()).into()
                        })
                        .collect();
                    v["model"]["merges"] = serde_json::Value::Array(lines);
                }),
            ),
            (
                "settings",
                edited(|v| {
                    let m = &mut v["model"];
                    m["unk_token"] = "<|endoftext|>".into();
                    m["fuse_unk"] = true.into();
                    m["ignore_merges"] = true.into();
                    m["byte_fallback"] = true.into();
                    m["something_new"] = 3.into();
                }),
            ),
            (
                "added tokens, special or not, normalized or not",
                edited(|v| {
                    v["added_tokens"] = serde_json::json!([
                        {"id": 0, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                         "rstrip": false, "normalized": false, "special": true},
                        {"id": 8192, "content": " It's", "single_word": true, "lstrip": true,
                         "rstrip": false, "normalized": true, "special": false},
                        {"id": 8193, "content": "🤖", "single_word": false, "lstrip": false,
                         "rstrip": true, "normalized": false, "special": false}
                    ]);
                }),
            ),
            (
                "no added tokens, no normalizer key",
                edited(|v| {
                    let o = v.as_object_mut().unwrap();
                    o.remove("added_tokens");
                    o.remove("normalizer");
                }),
            ),
        ];
        for (what, json) in cases {
            let (fast, slow) = both(&json);
            assert_eq!(fast.expect(what), slow, "{what}");
        }
    }

    #[test]
    fn leaves_to_tokenizers_what_it_does_not_read_alike() {
        let cases = [
            edited(|v| v["model"]["type"] = "WordPiece".into()),
            edited(|v| {
                v["model"].as_object_mut().unwrap().remove("type");
            }),
            edited(|v| v["model"]["merges"] = serde_json::json!(["#version: 0.2", "a b"])),
            edited(|v| v["model"]["merges"] = serde_json::json!(["a b c"])),
            edited(|v| v["model"]["merges"] = serde_json::json!(["a b", ["a", "b"]])),
            edited(|v| v["model"]["merges"] = serde_json::json!([["a", "b", "c"]])),
            edited(|v| v["version"] = "2.0".into()),
            edited(|v| v["added_tokens"] = serde_json::json!([{"content": "x"}])),
            "{\"mod\\u0065l\": {}}".to_owned(),
            // A key given twice.
            edited(|_| {}).replace("\"version\":", "\"version\":\"1.0\",\"version\":"),
            "not json".to_owned(),
        ];
        for json in cases {
            assert!(
                read(json.as_bytes()).is_none(),
                "{}",
                &json[..json.len().min(80)]
            );
        }
    }
}
