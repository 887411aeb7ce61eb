//! `config.json` of a `GPT2LMHeadModel`: the architecture. (Its generation keys are read by
//! [`crate::settings`].)

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// Upper bounds that keep a hostile config from asking for absurd allocations. Real GPT-2s are
/// far below them (GPT-2 XL: 1600 wide, 48 layers, 1024 positions).
const MAX_VOCAB: usize = 1 << 20;
const MAX_WIDTH: usize = 1 << 14;
const MAX_LAYERS: usize = 256;
const MAX_POSITIONS: usize = 1 << 16;
/// 4 G parameters: more than any GPT-2, less than a wasm32 address space can never hold anyway.
const MAX_PARAMS: u128 = 1 << 32;

/// The MLP non-linearity, named as in HF's `ACT2FN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation GPT-2 was trained with.
    GeluTanh,
    /// `gelu`: the exact erf form.
    GeluErf,
    /// `quick_gelu`: x·σ(1.702x).
    QuickGelu,
    Relu,
    /// `silu` / `swish`.
    Silu,
    Tanh,
    Sigmoid,
    /// `linear`: identity.
    Identity,
}

impl Activation {
    fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "gelu" => Self::GeluErf,
            "quick_gelu" => Self::QuickGelu,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            "tanh" => Self::Tanh,
            "sigmoid" => Self::Sigmoid,
            "linear" => Self::Identity,
            other => {
                return Err(Error::Config(format!(
                    "activation_function `{other}` is not supported"
                )))
            }
        })
    }
}

/// The architecture of a GPT-2: every `config.json` field that changes inference.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub vocab_size: usize,
    /// Context window (`n_positions`; older configs also repeat it as `n_ctx`).
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// MLP width; `n_inner: null` in the file means 4·n_embd.
    pub n_inner: usize,
    pub activation: Activation,
    pub layer_norm_epsilon: f64,
    /// Divide attention scores by √head_dim.
    pub scale_attn_weights: bool,
    /// Also divide attention scores of layer i by i+1.
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Mistral-style fp32 attention; in f32 inference it is the same arithmetic.
    pub reorder_and_upcast_attn: bool,
    /// `lm_head` shares `wte`'s matrix.
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    vocab_size: Option<usize>,
    n_positions: Option<usize>,
    n_ctx: Option<usize>,
    n_embd: Option<usize>,
    n_layer: Option<usize>,
    n_head: Option<usize>,
    n_inner: Option<usize>,
    activation_function: Option<String>,
    layer_norm_epsilon: Option<f64>,
    scale_attn_weights: Option<bool>,
    scale_attn_by_inverse_layer_idx: Option<bool>,
    reorder_and_upcast_attn: Option<bool>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
}

/// The first id of a token-id field that HF allows to be an int or a list of ints.
fn token_id(v: &Option<Value>, key: &str) -> Result<Option<u32>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| Error::Config(format!("{key} must be a token id, got {n}"))),
        Some(Value::Array(a)) if !a.is_empty() => token_id(&Some(a[0].clone()), key),
        Some(other) => Err(Error::Config(format!(
            "{key} must be a token id, got {other}"
        ))),
    }
}

impl Config {
    /// Parses and validates `config.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let raw: RawConfig = serde_json::from_slice(bytes)
            .map_err(|e| Error::Config(format!("not valid JSON for a GPT-2 config: {e}")))?;
        if let Some(t) = raw.model_type.as_deref() {
            if t != "gpt2" {
                return Err(Error::Config(format!(
                    "model_type is `{t}`; botcard runs GPT-2 (`gpt2`) models only"
                )));
            }
        }
        if let Some(archs) = &raw.architectures {
            if let Some(a) = archs.iter().find(|a| !a.starts_with("GPT2")) {
                return Err(Error::Config(format!(
                    "architecture `{a}` is not GPT-2; botcard runs GPT2LMHeadModel checkpoints"
                )));
            }
        }
        let need = |v: Option<usize>, key: &str, max: usize| -> Result<usize> {
            match v {
                None => Err(Error::Config(format!("`{key}` is missing"))),
                Some(0) => Err(Error::Config(format!("`{key}` must be positive"))),
                Some(n) if n > max => Err(Error::Config(format!(
                    "`{key}` = {n} is larger than botcard accepts ({max})"
                ))),
                Some(n) => Ok(n),
            }
        };
        let n_embd = need(raw.n_embd, "n_embd", MAX_WIDTH)?;
        let n_head = need(raw.n_head, "n_head", MAX_WIDTH)?;
        if n_embd % n_head != 0 {
            return Err(Error::Config(format!(
                "n_head ({n_head}) does not divide n_embd ({n_embd})"
            )));
        }
        let n_inner = match raw.n_inner {
            None => 4 * n_embd,
            n => need(n, "n_inner", 4 * MAX_WIDTH)?,
        };
        let cfg = Config {
            vocab_size: need(raw.vocab_size, "vocab_size", MAX_VOCAB)?,
            n_positions: need(raw.n_positions.or(raw.n_ctx), "n_positions", MAX_POSITIONS)?,
            n_embd,
            n_layer: need(raw.n_layer, "n_layer", MAX_LAYERS)?,
            n_head,
            n_inner,
            activation: Activation::parse(
                raw.activation_function.as_deref().unwrap_or("gelu_new"),
            )?,
            layer_norm_epsilon: match raw.layer_norm_epsilon {
                Some(e) if !(e.is_finite() && e >= 0.0) => {
                    return Err(Error::Config(format!(
                        "layer_norm_epsilon {e} is not usable"
                    )))
                }
                e => e.unwrap_or(1e-5),
            },
            scale_attn_weights: raw.scale_attn_weights.unwrap_or(true),
            scale_attn_by_inverse_layer_idx: raw.scale_attn_by_inverse_layer_idx.unwrap_or(false),
            reorder_and_upcast_attn: raw.reorder_and_upcast_attn.unwrap_or(false),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(true),
            bos_token_id: token_id(&raw.bos_token_id, "bos_token_id")?,
            eos_token_id: token_id(&raw.eos_token_id, "eos_token_id")?,
        };
        if cfg.parameter_count() > MAX_PARAMS {
            return Err(Error::Config(format!(
                "{} parameters is more than botcard loads",
                cfg.parameter_count()
            )));
        }
        Ok(cfg)
    }

    /// `config.json` for this architecture as HF's `GPT2Config.save_pretrained` writes it, with
    /// `task_specific_params` added when given.
    pub fn to_hf_json(&self, task_specific_params: Option<Value>) -> Value {
        let act = match self.activation {
            Activation::GeluTanh => "gelu_new",
            Activation::GeluErf => "gelu",
            Activation::QuickGelu => "quick_gelu",
            Activation::Relu => "relu",
            Activation::Silu => "silu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Identity => "linear",
        };
        let mut v = serde_json::json!({
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_ctx": self.n_positions,
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_inner": if self.n_inner == 4 * self.n_embd { Value::Null } else { self.n_inner.into() },
            "activation_function": act,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "scale_attn_weights": self.scale_attn_weights,
            "scale_attn_by_inverse_layer_idx": self.scale_attn_by_inverse_layer_idx,
            "reorder_and_upcast_attn": self.reorder_and_upcast_attn,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "attn_pdrop": 0.1, "embd_pdrop": 0.1, "resid_pdrop": 0.1,
            "initializer_range": 0.02,
            "use_cache": true,
        });
        if let Some(t) = task_specific_params {
            v["task_specific_params"] = t;
        }
        v
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Number of weights the config implies (for size checks before anything is allocated).
    pub fn parameter_count(&self) -> u128 {
        let (v, p, e, l, i) = (
            self.vocab_size as u128,
            self.n_positions as u128,
            self.n_embd as u128,
            self.n_layer as u128,
            self.n_inner as u128,
        );
        let block = 4 * e + (e * 3 * e + 3 * e) + (e * e + e) + (e * i + i) + (i * e + e);
        let head = if self.tie_word_embeddings { 0 } else { v * e };
        v * e + p * e + l * block + 2 * e + head
    }
}
