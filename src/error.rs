//! The library's one error type: every failure names what was being read and what is wrong, so
//! the edges (CLI, widget) can print it as one line.

/// Everything that can go wrong while loading a model or generating text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `config.json` is not JSON, not GPT-2, or has values the model cannot be built from.
    #[error("config.json: {0}")]
    Config(String),

    /// A file the model needs is not there.
    #[error("{0}")]
    MissingFile(String),

    /// A file the model needs may be there but could not be had; the caller's sentence says why.
    #[error("{0}")]
    Unavailable(String),

    /// A weights file (`model.safetensors`, `pytorch_model.bin`) could not be read.
    #[error("{file}: {reason}")]
    Weights { file: &'static str, reason: String },

    /// A tensor the model needs is missing from the checkpoint.
    #[error("{file}: tensor `{name}` is missing")]
    MissingTensor { file: &'static str, name: String },

    /// A tensor in the checkpoint disagrees with `config.json`.
    #[error("{file}: tensor `{name}` has shape {got:?}, config.json implies {expected:?}")]
    Shape {
        file: &'static str,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    /// The tokenizer files could not be built into a GPT-2 byte-level BPE.
    #[error("{file}: {reason}")]
    Tokenizer { file: &'static str, reason: String },

    /// Training data that cannot be read or is too small.
    #[error("{0}")]
    Dataset(String),

    /// A generation parameter is outside what it can mean.
    #[error("invalid generation parameter: {0}")]
    Parameter(String),

    /// The caller asked a long job (training) to stop.
    #[error("stopped")]
    Cancelled,

    /// The tensor library failed while running the model (a bug, not bad input).
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
}

/// `Result` with the library's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
