//! botcard: huggingtweets-style GPT-2 bots, loaded from bytes and run on candle — natively for
//! the `botcard` CLI and as WebAssembly in the browser.
//!
//! The library never touches files, threads or clocks: callers hand it the bytes of a model's
//! files ([`ModelFiles`], whose names and order [`files`] owns) and get a [`Bot`] that scores
//! and generates text with [`GenerationSettings`].

pub mod archive;
mod attention;
pub mod card;
pub mod config;
pub mod dataset;
pub mod dense;
pub mod error;
pub mod files;
pub mod generate;
pub mod ggml;
pub mod gguf;
pub mod model;
mod parallel;
mod pickle;
pub mod q4;
pub mod quant;
pub mod recipe;
#[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
pub mod relaxed_dot;
pub mod sampling;
pub mod screen;
pub mod settings;
pub mod shortlist;
pub mod single_byte;
pub mod stream;
pub mod tokenizer;
pub mod torch_stream;
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod wasm;
pub mod weights;

pub use config::Config;
pub use error::{Error, Result};
pub use files::ModelFiles;
pub use generate::{generate, Sequence, Session, StepToken};
pub use model::Gpt2;
pub use quant::Dtype;
pub use settings::GenerationSettings;
pub use tokenizer::{TextStream, Tokenizer};
pub use weights::Weights;

/// A ready-to-run bot: model, tokenizer and the generation defaults its files carry.
pub struct Bot {
    pub model: Gpt2,
    pub tokenizer: Tokenizer,
    pub config: Config,
    /// The generation settings the model's files ask for (HF pipeline semantics).
    pub defaults: GenerationSettings,
}

impl Bot {
    /// Loads a bot from the bytes of its files, checking that they agree with each other, with
    /// its weight matrices held as `dtype`.
    pub fn load(files: &ModelFiles, dtype: Dtype) -> Result<Self> {
        let config = Config::from_json(files.config()?)?;
        let tokenizer = files.tokenizer()?;
        Self::assemble(
            files,
            tokenizer,
            files.tensor_source(&config, dtype)?.as_ref(),
            dtype,
        )
    }

    /// A bot from its files' config, `tokenizer` (made from the files: [`ModelFiles::tokenizer`])
    /// and `weights`, already read (a streamed `model.safetensors`, [`stream::BotLoader`]) or
    /// read on demand (a checkpoint's bytes).
    pub fn assemble(
        files: &ModelFiles,
        tokenizer: Tokenizer,
        weights: &dyn model::TensorSource,
        dtype: Dtype,
    ) -> Result<Self> {
        let config_json = files.config()?;
        let config = Config::from_json(config_json)?;
        let defaults =
            GenerationSettings::from_model_files(config_json, files.generation_config()?)?;
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
        let model = Gpt2::from_source(&config, weights, dtype)?;
        Ok(Self {
            model,
            tokenizer,
            config,
            defaults,
        })
    }

    /// Generation settings as the model's files set them, to override and pass to
    /// [`Bot::session`].
    pub fn settings(&self) -> GenerationSettings {
        self.defaults.clone()
    }

    /// Starts a generation session for `prompt`.
    pub fn session(&self, prompt: &str, params: GenerationSettings) -> Result<Session> {
        Session::new(&self.model, &self.tokenizer, prompt, params)
    }

    /// Advances `session` (started with [`Bot::session`] on this bot) by one token per sequence.
    pub fn step(&self, session: &mut Session) -> Result<Vec<StepToken>> {
        session.step(&self.model, &self.tokenizer)
    }
}
