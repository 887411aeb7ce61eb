//! Which files make a model folder (the HF layout), which of them is preferred when a folder has
//! more than one form of the same part, and what is said when a part is missing. This module is
//! the one owner of that rule: the CLI, the wasm API (and through it the worker and the file
//! picker) and the tests ask it, through [`next_wanted`] and [`ModelFiles`].
//!
//! Adding a format is one new [`Choice`] in [`PARTS`] plus the arm that loads it.

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use crate::weights::Weights;

/// The file names, each written once.
pub const CONFIG: &str = "config.json";
pub const GENERATION_CONFIG: &str = "generation_config.json";
pub const SAFETENSORS: &str = "model.safetensors";
/// Pre-quantized weights (`botcard convert --dtype q8_0|q4_0|q4k`), [`crate::gguf`].
pub const GGUF: &str = "model.gguf";
pub const PYTORCH: &str = "pytorch_model.bin";
pub const TOKENIZER: &str = "tokenizer.json";
pub const VOCAB: &str = "vocab.json";
pub const MERGES: &str = "merges.txt";
/// The model card: not needed to run a model, but part of its folder.
pub const CARD: &str = "README.md";

/// Whether `name` can be read in pieces as it arrives ([`crate::stream::BotLoader::push`]).
pub fn streamed(name: &str) -> bool {
    name == SAFETENSORS || name == GGUF || name == PYTORCH
}

/// Whether `name` is one of the files that can provide a model's weights.
pub fn is_weights(name: &str) -> bool {
    PARTS
        .iter()
        .filter(|p| p.what == WEIGHTS)
        .flat_map(|p| p.choices.iter().copied().flatten())
        .any(|n| *n == name)
}

/// The part that holds the weights.
pub(crate) const WEIGHTS: &str = "weights";
/// The part that holds the tokenizer.
pub(crate) const TOKENIZER_PART: &str = "tokenizer";

/// One part of a model and the sets of files that can provide it, best (fastest to load) first.
#[derive(Debug)]
pub struct Part {
    /// What the part is, for messages.
    pub what: &'static str,
    /// Whether a model can do without it.
    pub required: bool,
    /// Each choice is a set of files that together provide the part.
    pub choices: &'static [Choice],
}

/// A set of files that together provide a part.
pub type Choice = &'static [&'static str];

/// Every part of a model folder, in the order they are looked for: a missing `config.json` or
/// tokenizer is reported before hundreds of MB of weights are fetched, and the tokenizer (whose
/// making needs tens of MB for a moment) is made before the weights take their room
/// ([`crate::stream::BotLoader`]).
pub const PARTS: &[Part] = &[
    Part {
        what: "config",
        required: true,
        choices: &[&[CONFIG]],
    },
    Part {
        what: "generation settings",
        required: false,
        choices: &[&[GENERATION_CONFIG]],
    },
    Part {
        what: TOKENIZER_PART,
        required: true,
        choices: &[&[TOKENIZER], &[VOCAB, MERGES]],
    },
    Part {
        what: WEIGHTS,
        required: true,
        choices: &[&[GGUF], &[SAFETENSORS], &[PYTORCH]],
    },
];

/// Every file name a model folder may hold, in the order of [`PARTS`].
pub fn all_names() -> impl Iterator<Item = &'static str> {
    PARTS
        .iter()
        .flat_map(|p| p.choices.iter().flat_map(|c| c.iter().copied()))
}

/// The files [`next_wanted`] asks for whatever else a folder holds, once the parts before them
/// are found: the first file of each part's first choice, up to the weights. They are small, so
/// the worker reads them at once, side by side, rather than a round trip after another. (Not
/// the weights: which file holds them is known only once the ones before are found missing.)
pub fn read_ahead() -> impl Iterator<Item = &'static str> {
    PARTS
        .iter()
        .take_while(|p| p.what != WEIGHTS)
        .filter_map(|p| p.choices.first().and_then(|c| c.first()).copied())
}

/// The files to read along with `name` once [`next_wanted`] asks for it: the rest of its choice
/// (`merges.txt` with `vocab.json`), which it asks for next while `name` is found. Weights files
/// are never read along: they are not small.
pub fn read_along(name: &str) -> impl Iterator<Item = &'static str> + '_ {
    PARTS
        .iter()
        .flat_map(|p| p.choices.iter().copied())
        .filter(move |c| c.contains(&name))
        .flat_map(|c| c.iter().copied())
        .filter(move |n| *n != name && !is_weights(n))
}

impl Part {
    /// The sentence for a folder that has none of this part's choices.
    fn missing(&self) -> Error {
        let sets: Vec<String> = self.choices.iter().map(|c| c.join(" + ")).collect();
        Error::MissingFile(match sets.as_slice() {
            [one] => format!("The model has no {one}."),
            [rest @ .., last] => format!("The model has neither {} nor {last}.", rest.join(", ")),
            [] => format!("The model has no {}.", self.what),
        })
    }

    /// The first choice whose files are all present, given whether each file is known present.
    fn chosen(&self, present: impl Fn(&str) -> bool) -> Option<Choice> {
        self.choices
            .iter()
            .copied()
            .find(|c| c.iter().all(|n| present(n)))
    }
}

/// What is known of one file of a source while a model is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known<'a> {
    /// Not asked for yet.
    Unasked,
    /// Fetched.
    Present,
    /// The source does not have it.
    Absent,
    /// The source may have it, but it could not be read (an HTTP error, an answer the browser
    /// withholds): the sentence says why. Other choices are tried as if it were absent, and a
    /// required part that has none left reports this sentence rather than "has no".
    Unreadable(&'a str),
}

/// The next file to fetch, given what is known so far about each file. `Ok(None)` once every
/// part is settled; an error names a required part that no choice can provide. Asking for files
/// one at a time in this order fetches only what will be used (no `pytorch_model.bin` when
/// `model.safetensors` is there) and stops at the first missing required part.
pub fn next_wanted<'a>(known: impl Fn(&str) -> Known<'a>) -> Result<Option<&'static str>> {
    for part in PARTS {
        let mut settled = false;
        for choice in part.choices {
            match choice.iter().find(|n| known(n) != Known::Present) {
                None => {
                    settled = true;
                    break;
                }
                Some(name) if known(name) == Known::Unasked => return Ok(Some(name)),
                Some(_) => {} // a file of this choice cannot be had: try the next choice
            }
        }
        if !settled && part.required {
            let why = part
                .choices
                .iter()
                .flat_map(|c| c.iter())
                .find_map(|n| match known(n) {
                    Known::Unreadable(why) => Some(why),
                    _ => None,
                });
            return Err(match why {
                Some(why) => Error::Unavailable(why.to_owned()),
                None => part.missing(),
            });
        }
    }
    Ok(None)
}

/// The files worth reading from a source whose contents can be listed cheaply (a folder, a set
/// of picked files): for each part, the files of its preferred present choice. A part with no
/// present choice is left for [`ModelFiles`] to report when it is asked for.
pub fn wanted(present: impl Fn(&str) -> bool) -> Vec<&'static str> {
    PARTS
        .iter()
        .filter_map(|p| p.chosen(&present))
        .flat_map(|c| c.iter().copied())
        .collect()
}

/// Whether `bytes` begin as a web page (HTML, or the XML of a storage service's error) rather
/// than a model file: what a hub or mirror sends with status 200 for a file it does not have.
/// No model file format starts so: JSON starts with `{`, the binaries with their magic or a
/// length, and merges.txt with `#version` or a token pair.
pub fn is_web_page(bytes: &[u8]) -> bool {
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let head = &text[start..text.len().min(start + 9)];
    [&b"<!doctype"[..], b"<html", b"<head", b"<body", b"<?xml"]
        .iter()
        .any(|tag| head.len() >= tag.len() && head[..tag.len()].eq_ignore_ascii_case(tag))
}

/// `Ok` unless `bytes` of the file `name` are a web page (see [`is_web_page`]).
pub(crate) fn check_not_web_page(name: &str, bytes: &[u8]) -> Result<()> {
    if is_web_page(bytes) {
        return Err(Error::Unavailable(format!(
            "{name} is a web page, not the model's file: the hub sent an error page in its place."
        )));
    }
    Ok(())
}

/// The bytes of a model folder's files; each part is read from its preferred present choice.
#[derive(Default, Clone)]
pub struct ModelFiles<'a> {
    files: Vec<(&'static str, &'a [u8])>,
}

impl<'a> ModelFiles<'a> {
    /// Builds the set from a lookup by file name (a folder, a JS object, a test's map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<&'a [u8]>) -> Self {
        Self {
            files: all_names().filter_map(|n| get(n).map(|b| (n, b))).collect(),
        }
    }

    /// The bytes of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.files.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
    }

    /// The preferred present choice of the part `what`.
    pub(crate) fn choice(&self, what: &str) -> Result<Option<Choice>> {
        let part = PARTS
            .iter()
            .find(|p| p.what == what)
            .expect("a part named in PARTS");
        match part.chosen(|n| self.get(n).is_some()) {
            Some(c) => {
                for name in c {
                    check_not_web_page(name, self.get(name).expect("chosen: present"))?;
                }
                Ok(Some(c))
            }
            None if part.required => Err(part.missing()),
            None => Ok(None),
        }
    }

    /// `config.json`, which every model needs.
    pub fn config(&self) -> Result<&'a [u8]> {
        self.choice("config")?;
        Ok(self.get(CONFIG).expect("the chosen file is present"))
    }

    /// `generation_config.json`, if the model has one.
    pub fn generation_config(&self) -> Result<Option<&'a [u8]>> {
        Ok(self
            .choice("generation settings")?
            .and_then(|_| self.get(GENERATION_CONFIG)))
    }

    /// The checkpoint tensors as stored, from the preferred format present: what converting
    /// and fine-tuning start from (a pre-quantized `model.gguf` is not such a checkpoint).
    pub fn weights(&self) -> Result<Weights<'a>> {
        let choice = self.choice(WEIGHTS)?.expect("weights are required");
        let bytes = self.get(choice[0]).expect("the chosen file is present");
        match choice[0] {
            SAFETENSORS => Weights::from_safetensors(bytes),
            PYTORCH => Weights::from_pytorch(bytes),
            GGUF => Err(Error::Weights {
                file: GGUF,
                reason: format!(
                    "holds weights already quantized; converting and training start from {SAFETENSORS} or {PYTORCH}"
                ),
            }),
            other => unreachable!("PARTS lists weights `{other}` without a loader"),
        }
    }

    /// The weights as the model will hold them (matrices in `dtype`), from the preferred format
    /// present: a checkpoint read on demand, or a `model.gguf` made ready at once.
    pub fn tensor_source(
        &self,
        config: &crate::Config,
        dtype: crate::Dtype,
    ) -> Result<Box<dyn crate::model::TensorSource + 'a>> {
        let choice = self.choice(WEIGHTS)?.expect("weights are required");
        if choice[0] == GGUF {
            let mut stream = crate::gguf::GgufStream::new(config, dtype);
            stream.push(self.get(GGUF).expect("the chosen file is present"))?;
            return Ok(Box::new(stream.finish()?));
        }
        Ok(Box::new(self.weights()?))
    }

    /// The tokenizer, from the preferred format present.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let choice = self
            .choice(TOKENIZER_PART)?
            .expect("a tokenizer is required");
        let file = |n| self.get(n).expect("the chosen file is present");
        match choice {
            [TOKENIZER] => Tokenizer::from_tokenizer_json(file(TOKENIZER)),
            [VOCAB, MERGES] => Tokenizer::from_vocab_and_merges(file(VOCAB), file(MERGES)),
            other => unreachable!("PARTS lists tokenizer files {other:?} without a loader"),
        }
    }
}

/// What `botcard convert` writes a model's weights as: `model.safetensors` in f32 or f16 (what
/// HF transformers reads), or `model.gguf` pre-quantized (what loads fastest and smallest here,
/// and runs in llama.cpp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    Safetensors(crate::weights::Precision),
    Gguf(crate::gguf::FileType),
}

impl WeightsFormat {
    /// Every format, by the name `--dtype` takes.
    pub const ALL: [WeightsFormat; 5] = {
        use crate::gguf::FileType;
        use crate::weights::Precision;
        [
            Self::Safetensors(Precision::F32),
            Self::Safetensors(Precision::F16),
            Self::Gguf(FileType::Q8_0),
            Self::Gguf(FileType::Q4_0),
            Self::Gguf(FileType::Q4K),
        ]
    };

    /// The name `botcard convert --dtype` takes.
    pub fn name(self) -> &'static str {
        use crate::weights::Precision;
        match self {
            Self::Safetensors(Precision::F32) => "f32",
            Self::Safetensors(Precision::F16) => "f16",
            Self::Gguf(t) => t.name(),
        }
    }

    /// The format named `name`.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|f| f.name()).collect();
                Error::Parameter(format!(
                    "weights format `{name}` is not one of {}",
                    names.join(", ")
                ))
            })
    }

    /// The file it writes.
    pub fn file(self) -> &'static str {
        match self {
            Self::Safetensors(_) => SAFETENSORS,
            Self::Gguf(_) => GGUF,
        }
    }
}

impl ModelFiles<'_> {
    /// The folder in the preferred formats: the weights as `format`, `tokenizer.json`, and the
    /// config files as they are.
    pub fn to_preferred(&self, format: WeightsFormat) -> Result<Vec<(&'static str, Vec<u8>)>> {
        let config = crate::Config::from_json(self.config()?)?;
        let weights = match format {
            WeightsFormat::Safetensors(p) => {
                crate::weights::to_safetensors(&config, &self.weights()?, p)?
            }
            WeightsFormat::Gguf(t) => crate::gguf::write(self, t)?,
        };
        let mut out = vec![
            (CONFIG, self.config()?.to_vec()),
            (format.file(), weights),
            (TOKENIZER, self.tokenizer()?.to_json()?.into_bytes()),
        ];
        if let Some(g) = self.generation_config()? {
            out.push((GENERATION_CONFIG, g.to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the fetch loop against a source that has `have` and cannot give `unreadable` (with
    /// the sentence saying why): every name asked for and what the source answered, in order,
    /// and how the loop ended.
    fn ask<'a>(
        have: &[&str],
        unreadable: &[(&str, &'a str)],
    ) -> (Vec<(&'static str, Known<'a>)>, Result<()>) {
        let mut known: Vec<(&'static str, Known<'a>)> = Vec::new();
        loop {
            let next = next_wanted(|n| {
                known
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map_or(Known::Unasked, |(_, v)| *v)
            });
            let name = match next {
                Ok(Some(name)) => name,
                Ok(None) => return (known, Ok(())),
                Err(e) => return (known, Err(e)),
            };
            let what = match unreadable.iter().find(|(n, _)| *n == name) {
                Some((_, why)) => Known::Unreadable(why),
                None if have.contains(&name) => Known::Present,
                None => Known::Absent,
            };
            known.push((name, what));
        }
    }

    /// What the fetch loop fetched from such a source (see [`ask`]), in order.
    fn fetch_from(have: &[&str], unreadable: &[(&str, &str)]) -> Result<Vec<&'static str>> {
        let (known, ended) = ask(have, unreadable);
        ended?;
        Ok(known
            .into_iter()
            .filter(|(_, k)| *k == Known::Present)
            .map(|(n, _)| n)
            .collect())
    }

    fn fetch(have: &[&str]) -> Result<Vec<&'static str>> {
        fetch_from(have, &[])
    }

    #[test]
    fn every_file_read_ahead_is_asked_for_whatever_else_the_folder_holds() {
        let ahead: Vec<_> = read_ahead().collect();
        assert_eq!(ahead, [CONFIG, GENERATION_CONFIG, TOKENIZER]);
        for have in [
            &[CONFIG][..],
            &[CONFIG, TOKENIZER, GGUF],
            &[CONFIG, GENERATION_CONFIG, VOCAB, MERGES, PYTORCH],
            &[CONFIG, VOCAB, MERGES, SAFETENSORS],
        ] {
            // Whether or not the folder loads (the first has no tokenizer): in the order the
            // library asks, before anything else.
            let asked: Vec<_> = ask(have, &[]).0.into_iter().map(|(n, _)| n).collect();
            assert_eq!(asked[..ahead.len()], ahead[..], "{have:?}");
        }
    }

    #[test]
    fn the_files_read_along_are_the_rest_of_a_choice_and_asked_for_next() {
        assert_eq!(read_along(VOCAB).collect::<Vec<_>>(), [MERGES]);
        assert_eq!(read_along(MERGES).collect::<Vec<_>>(), [VOCAB]);
        for alone in [
            CONFIG,
            GENERATION_CONFIG,
            TOKENIZER,
            GGUF,
            SAFETENSORS,
            PYTORCH,
        ] {
            assert_eq!(read_along(alone).count(), 0, "{alone}");
        }
        // A folder with vocab.json is asked for merges.txt right after it.
        let asked = fetch(&[CONFIG, VOCAB, MERGES, PYTORCH]).unwrap();
        let at = asked.iter().position(|n| *n == VOCAB).unwrap();
        assert_eq!(asked[at + 1], MERGES);
    }

    #[test]
    fn an_unreadable_file_is_passed_over_and_named_only_when_its_part_has_nothing_else() {
        let have = ["config.json", "tokenizer.json", "pytorch_model.bin"];
        let why = "Could not download model.gguf (HTTP 500).";
        // An optional file, and a better weights format, that cannot be read: the rest loads.
        assert_eq!(
            fetch_from(
                &have,
                &[("generation_config.json", "x"), ("model.gguf", why)]
            )
            .unwrap(),
            have
        );
        // A required part whose only readable choice is missing: the reason, not "has no".
        let e = fetch_from(&["config.json", "tokenizer.json"], &[("model.gguf", why)]);
        assert_eq!(e.unwrap_err().to_string(), why);
        let e = fetch_from(&["tokenizer.json"], &[("config.json", "No CORS.")]);
        assert_eq!(e.unwrap_err().to_string(), "No CORS.");
    }

    #[test]
    fn fast_formats_are_fetched_and_slow_ones_skipped() {
        let all: Vec<&str> = all_names().collect();
        assert_eq!(
            fetch(&all).unwrap(),
            [
                "config.json",
                "generation_config.json",
                "tokenizer.json",
                "model.gguf"
            ]
        );
        let no_gguf: Vec<&str> = all_names().filter(|n| *n != GGUF).collect();
        assert_eq!(
            fetch(&no_gguf).unwrap(),
            [
                "config.json",
                "generation_config.json",
                "tokenizer.json",
                "model.safetensors"
            ]
        );
    }

    #[test]
    fn every_weights_format_name_parses_back() {
        for f in WeightsFormat::ALL {
            assert_eq!(WeightsFormat::parse(f.name()).unwrap(), f);
        }
        assert!(WeightsFormat::parse("q3").is_err());
    }

    #[test]
    fn a_2021_folder_falls_back_to_bin_and_vocab_plus_merges() {
        let have = [
            "config.json",
            "vocab.json",
            "merges.txt",
            "pytorch_model.bin",
        ];
        assert_eq!(fetch(&have).unwrap(), have);
    }

    #[test]
    fn a_missing_required_part_stops_the_fetch_with_one_sentence() {
        let e = fetch(&["model.safetensors", "tokenizer.json"]).unwrap_err();
        assert_eq!(e.to_string(), "The model has no config.json.");
        let e = fetch(&["config.json", "tokenizer.json"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "The model has neither model.gguf, model.safetensors nor pytorch_model.bin."
        );
        let e = fetch(&["config.json", "model.safetensors", "vocab.json"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "The model has neither tokenizer.json nor vocab.json + merges.txt."
        );
    }
}
