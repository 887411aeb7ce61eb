//! GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners") with a
//! key/value cache, numerically following HF transformers' `GPT2LMHeadModel` in f32.
//!
//! `botcard score --model tests/fixtures/models/tiny-st --text "My dream is"` runs it.
//!
//! Shapes: B batch, T new tokens, S = past + T cached positions, C = n_embd, nh heads of hs.
//! Loading gotchas, handled where they happen: HF stores Conv1D weights as [in, out] (we keep
//! [out, in] so that a later quantized matmul can take them as they are), `lm_head` is usually
//! tied to `wte`, and old checkpoints carry `attn.bias`/`attn.masked_bias` buffers we never read.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{kv_cache::KvCache, LayerNorm, Linear};

use crate::config::{Activation, Config};
use crate::error::{Error, Result};
use crate::weights::Weights;

/// A Conv1D of the checkpoint as a Linear: weight [in, out] transposed to [out, in].
fn conv1d(w: &Weights, name: &str, n_in: usize, n_out: usize, dev: &Device) -> Result<Linear> {
    let weight = w
        .get(&format!("{name}.weight"), &[n_in, n_out], dev)?
        .t()?
        .contiguous()?;
    let bias = w.get(&format!("{name}.bias"), &[n_out], dev)?;
    Ok(Linear::new(weight, Some(bias)))
}

fn layer_norm(w: &Weights, name: &str, cfg: &Config, dev: &Device) -> Result<LayerNorm> {
    let weight = w.get(&format!("{name}.weight"), &[cfg.n_embd], dev)?;
    let bias = w.get(&format!("{name}.bias"), &[cfg.n_embd], dev)?;
    Ok(LayerNorm::new(weight, bias, cfg.layer_norm_epsilon))
}

struct Attention {
    c_attn: Linear,
    c_proj: Linear,
    n_head: usize,
    /// Multiplies q·kᵀ: 1/√hs (if scale_attn_weights) · 1/(layer+1) (if by inverse layer idx).
    scale: f64,
}

impl Attention {
    fn load(w: &Weights, layer: usize, cfg: &Config, dev: &Device) -> Result<Self> {
        let p = format!("h.{layer}.attn");
        let e = cfg.n_embd;
        let mut scale = 1.0;
        if cfg.scale_attn_weights {
            scale /= (cfg.head_dim() as f64).sqrt();
        }
        if cfg.scale_attn_by_inverse_layer_idx {
            scale /= (layer + 1) as f64;
        }
        Ok(Self {
            c_attn: conv1d(w, &format!("{p}.c_attn"), e, 3 * e, dev)?,
            c_proj: conv1d(w, &format!("{p}.c_proj"), e, e, dev)?,
            n_head: cfg.n_head,
            scale,
        })
    }

    /// x: (B, T, C); `mask`: (T, S) with -inf where a query may not look, None when T = 1.
    fn forward(&self, x: &Tensor, cache: &mut KvCache, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let hs = c / self.n_head;
        let qkv = self.c_attn.forward(x)?; // (B, T, 3C)
        let split = |i: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(D::Minus1, i * c, c)?
                .reshape((b, t, self.n_head, hs))?
                .transpose(1, 2)? // (B, nh, T, hs)
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let (k, v) = cache.append(&k, &v)?; // (B, nh, S, hs)
        let att = (q.matmul(&k.t()?.contiguous()?)? * self.scale)?; // (B, nh, T, S)
        let att = match mask {
            Some(m) => att.broadcast_add(m)?,
            None => att,
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v.contiguous()?)?; // (B, nh, T, hs)
        let y = y.transpose(1, 2)?.reshape((b, t, c))?; // (B, T, C)
        Ok(self.c_proj.forward(&y)?)
    }
}

struct Mlp {
    c_fc: Linear,
    c_proj: Linear,
    act: Activation,
}

impl Mlp {
    fn load(w: &Weights, layer: usize, cfg: &Config, dev: &Device) -> Result<Self> {
        let p = format!("h.{layer}.mlp");
        Ok(Self {
            c_fc: conv1d(w, &format!("{p}.c_fc"), cfg.n_embd, cfg.n_inner, dev)?,
            c_proj: conv1d(w, &format!("{p}.c_proj"), cfg.n_inner, cfg.n_embd, dev)?,
            act: cfg.activation,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.c_fc.forward(x)?;
        let h = match self.act {
            Activation::GeluTanh => h.gelu()?,
            Activation::GeluErf => h.gelu_erf()?,
            Activation::QuickGelu => (&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?,
            Activation::Relu => h.relu()?,
            Activation::Silu => h.silu()?,
            Activation::Tanh => h.tanh()?,
            Activation::Sigmoid => candle_nn::ops::sigmoid(&h)?,
            Activation::Identity => h,
        };
        Ok(self.c_proj.forward(&h)?)
    }
}

struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    fn load(w: &Weights, layer: usize, cfg: &Config, dev: &Device) -> Result<Self> {
        Ok(Self {
            ln_1: layer_norm(w, &format!("h.{layer}.ln_1"), cfg, dev)?,
            attn: Attention::load(w, layer, cfg, dev)?,
            ln_2: layer_norm(w, &format!("h.{layer}.ln_2"), cfg, dev)?,
            mlp: Mlp::load(w, layer, cfg, dev)?,
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut KvCache, mask: Option<&Tensor>) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.ln_1.forward(x)?, cache, mask)?)?;
        Ok((&x + self.mlp.forward(&self.ln_2.forward(&x)?)?)?)
    }
}

/// The key/value cache of one generation, and the absolute position it has reached. Positions
/// live here, not in the caller, so incremental decoding sees the same positions as a full pass.
pub struct Cache {
    layers: Vec<KvCache>,
    pos: usize,
}

impl Cache {
    /// Number of positions already processed.
    pub fn position(&self) -> usize {
        self.pos
    }
}

/// A loaded GPT-2 language model.
pub struct Gpt2 {
    wte: Tensor,
    wpe: Tensor,
    h: Vec<Block>,
    ln_f: LayerNorm,
    /// (V, C); the same tensor as `wte` when tied.
    lm_head: Linear,
    cfg: Config,
    device: Device,
}

impl Gpt2 {
    /// Builds the model from checkpoint tensors, checking every shape against `cfg`.
    pub fn load(cfg: &Config, w: &Weights) -> Result<Self> {
        let dev = Device::Cpu;
        let wte = w.get("wte.weight", &[cfg.vocab_size, cfg.n_embd], &dev)?;
        let wpe = w.get("wpe.weight", &[cfg.n_positions, cfg.n_embd], &dev)?;
        let h = (0..cfg.n_layer)
            .map(|l| Block::load(w, l, cfg, &dev))
            .collect::<Result<_>>()?;
        let ln_f = layer_norm(w, "ln_f", cfg, &dev)?;
        // A stored lm_head.weight in a tied model is a copy of wte: use wte, as HF does.
        let lm_head = if cfg.tie_word_embeddings {
            wte.clone()
        } else {
            w.get("lm_head.weight", &[cfg.vocab_size, cfg.n_embd], &dev)?
        };
        Ok(Self {
            wte,
            wpe,
            h,
            ln_f,
            lm_head: Linear::new(lm_head, None),
            cfg: cfg.clone(),
            device: dev,
        })
    }

    /// The architecture this model was built with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// An empty cache with room for `capacity` positions (it grows if needed, up to
    /// `n_positions`).
    pub fn new_cache(&self, capacity: usize) -> Cache {
        let cap = capacity.clamp(1, self.cfg.n_positions);
        Cache {
            layers: (0..self.cfg.n_layer)
                .map(|_| KvCache::new(2, cap))
                .collect(),
            pos: 0,
        }
    }

    /// Runs `ids` (B, T) after what `cache` holds and returns the final hidden states (B, T, C).
    pub fn forward(&self, ids: &[Vec<u32>], cache: &mut Cache) -> Result<Tensor> {
        let b = ids.len();
        let t = ids.first().map_or(0, Vec::len);
        if b == 0 || t == 0 || ids.iter().any(|r| r.len() != t) {
            return Err(Error::Parameter(
                "a batch needs rows of equal, non-zero length".into(),
            ));
        }
        if cache.pos + t > self.cfg.n_positions {
            return Err(Error::Parameter(format!(
                "{} positions exceed the model's context of {}",
                cache.pos + t,
                self.cfg.n_positions
            )));
        }
        if let Some(&bad) = ids
            .iter()
            .flatten()
            .find(|&&id| id as usize >= self.cfg.vocab_size)
        {
            return Err(Error::Parameter(format!(
                "token id {bad} is outside the model's vocabulary"
            )));
        }
        let flat: Vec<u32> = ids.concat();
        let tok = self
            .wte
            .index_select(&Tensor::new(flat, &self.device)?, 0)?
            .reshape((b, t, self.cfg.n_embd))?;
        let positions = Tensor::arange(cache.pos as u32, (cache.pos + t) as u32, &self.device)?;
        let pos = self.wpe.index_select(&positions, 0)?; // (T, C)
        let mut x = tok.broadcast_add(&pos)?;
        let mask = if t > 1 {
            Some(self.causal_mask(cache.pos, t)?)
        } else {
            None
        };
        for (block, kv) in self.h.iter().zip(cache.layers.iter_mut()) {
            x = block.forward(&x, kv, mask.as_ref())?;
        }
        cache.pos += t;
        Ok(self.ln_f.forward(&x)?)
    }

    /// Logits over the vocabulary for hidden states (…, C) -> (…, V).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.lm_head.forward(hidden)?)
    }

    /// Logits (B, V) of the next token after `ids`, the common case in generation.
    pub fn next_logits(&self, ids: &[Vec<u32>], cache: &mut Cache) -> Result<Tensor> {
        let hidden = self.forward(ids, cache)?;
        let t = hidden.dim(1)?;
        self.logits(&hidden.narrow(1, t - 1, 1)?.squeeze(1)?)
    }

    /// log P(ids[i+1] | ids[..=i]) for every i, computed in one pass.
    pub fn logprobs(&self, ids: &[u32]) -> Result<Vec<f32>> {
        if ids.len() < 2 {
            return Ok(Vec::new());
        }
        let mut cache = self.new_cache(ids.len());
        let hidden = self.forward(&[ids.to_vec()], &mut cache)?;
        let logits = self.logits(&hidden.squeeze(0)?)?; // (T, V)
        let lp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
        let targets = Tensor::new(&ids[1..], &self.device)?.unsqueeze(1)?;
        let picked = lp
            .narrow(0, 0, ids.len() - 1)?
            .gather(&targets, 1)?
            .squeeze(1)?;
        Ok(picked.to_vec1()?)
    }

    /// (T, S) additive mask: query i (at absolute position past+i) sees keys 0..=past+i.
    fn causal_mask(&self, past: usize, t: usize) -> Result<Tensor> {
        let s = past + t;
        let data: Vec<f32> = (0..t)
            .flat_map(|i| (0..s).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        Ok(Tensor::from_vec(data, (t, s), &self.device)?)
    }
}
