//! botcard: huggingtweets-style GPT-2 bots, loaded from bytes and run on candle — natively for
//! the `botcard` CLI and as WebAssembly in the browser.
//!
//! The library never touches files, threads or clocks: callers hand it the bytes of a model's
//! files ([`ModelFiles`]) and get a [`Bot`] that scores and generates text.

pub mod card;
pub mod config;
pub mod dataset;
pub mod error;
pub mod generate;
pub mod model;
mod pickle;
pub mod sampling;
pub mod tokenizer;
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod wasm;
pub mod weights;

pub use config::{Config, GenerationDefaults};
pub use error::{Error, Result};
pub use generate::{generate, GenerateParams, ParamOverrides, Sequence, Session, StepToken};
pub use model::Gpt2;
pub use tokenizer::{TextStream, Tokenizer};
pub use weights::Weights;

/// The bytes of a model folder in the HF layout; `None` for files it does not have.
#[derive(Default, Clone, Copy)]
pub struct ModelFiles<'a> {
    pub config_json: Option<&'a [u8]>,
    pub generation_config_json: Option<&'a [u8]>,
    pub model_safetensors: Option<&'a [u8]>,
    pub pytorch_model_bin: Option<&'a [u8]>,
    pub tokenizer_json: Option<&'a [u8]>,
    pub vocab_json: Option<&'a [u8]>,
    pub merges_txt: Option<&'a [u8]>,
}

impl<'a> ModelFiles<'a> {
    /// The files a model folder needs, in the order they are looked for (what to download).
    pub const NAMES: [&'static str; 7] = [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "pytorch_model.bin",
        "tokenizer.json",
        "vocab.json",
        "merges.txt",
    ];

    /// Builds the set from a lookup by file name (a folder, a JS object, a test's map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<&'a [u8]>) -> Self {
        Self {
            config_json: get("config.json"),
            generation_config_json: get("generation_config.json"),
            model_safetensors: get("model.safetensors"),
            pytorch_model_bin: get("pytorch_model.bin"),
            tokenizer_json: get("tokenizer.json"),
            vocab_json: get("vocab.json"),
            merges_txt: get("merges.txt"),
        }
    }

    /// The checkpoint tensors: `model.safetensors` if present, else `pytorch_model.bin`.
    pub fn weights(&self) -> Result<Weights<'a>> {
        match (self.model_safetensors, self.pytorch_model_bin) {
            (Some(st), _) => Weights::from_safetensors(st),
            (None, Some(bin)) => Weights::from_pytorch(bin),
            (None, None) => Err(Error::MissingFile(
                "the model has neither model.safetensors nor pytorch_model.bin".into(),
            )),
        }
    }

    /// The tokenizer: `tokenizer.json` if present, else `vocab.json` + `merges.txt`.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        match (self.tokenizer_json, self.vocab_json, self.merges_txt) {
            (Some(t), _, _) => Tokenizer::from_tokenizer_json(t),
            (None, Some(v), Some(m)) => Tokenizer::from_vocab_and_merges(v, m),
            _ => Err(Error::MissingFile(
                "the model has neither tokenizer.json nor vocab.json + merges.txt".into(),
            )),
        }
    }

    /// `config.json`, which every model needs.
    pub fn config(&self) -> Result<&'a [u8]> {
        self.config_json
            .ok_or_else(|| Error::MissingFile("the model has no config.json".into()))
    }
}

/// A ready-to-run bot: model, tokenizer and the generation defaults its files carry.
pub struct Bot {
    pub model: Gpt2,
    pub tokenizer: Tokenizer,
    pub config: Config,
    pub defaults: GenerationDefaults,
}

impl Bot {
    /// Loads a bot from the bytes of its files, checking that they agree with each other.
    pub fn load(files: &ModelFiles) -> Result<Self> {
        let config_json = files.config()?;
        let config = Config::from_json(config_json)?;
        let defaults =
            GenerationDefaults::from_model_files(config_json, files.generation_config_json)?;
        let tokenizer = files.tokenizer()?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(Error::Tokenizer {
                file: "tokenizer",
                reason: format!(
                    "has {} tokens but config.json's vocab_size is {}",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            });
        }
        let model = Gpt2::load(&config, &files.weights()?)?;
        Ok(Self {
            model,
            tokenizer,
            config,
            defaults,
        })
    }

    /// Generation parameters as the model's files set them (HF pipeline semantics).
    pub fn default_params(&self) -> GenerateParams {
        GenerateParams::from_defaults(&self.defaults)
    }

    /// Starts a generation session for `prompt`.
    pub fn session(&self, prompt: &str, params: GenerateParams) -> Result<Session> {
        Session::new(&self.model, &self.tokenizer, prompt, params)
    }

    /// Advances `session` (started with [`Bot::session`] on this bot) by one token per sequence.
    pub fn step(&self, session: &mut Session) -> Result<Vec<StepToken>> {
        session.step(&self.model, &self.tokenizer)
    }
}
