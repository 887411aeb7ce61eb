//! Training a GPT-2 on a token stream with candle's autograd: AdamW, linear warmup then cosine
//! decay, random windows as batches, a held-out tail for perplexity. Seeded end to end (weights,
//! batches), so a run can be repeated. No clocks or files here: the caller times and saves.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{Gpt2, TensorSource};
use crate::weights::{expected_tensors, Weights};

/// Model sizes `botcard train --size` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// 2 layers × 64 wide, 128 positions: trains in seconds, for tests.
    Tiny,
    /// 4 layers × 256 wide, 256 positions.
    Small,
    /// GPT-2 124M: 12 layers × 768 wide, 1024 positions.
    Base,
}

impl Size {
    /// The GPT-2 config of this size for a vocabulary of `vocab_size` tokens.
    pub fn config(self, vocab_size: usize, eos: u32) -> Config {
        let (n_embd, n_layer, n_head, n_positions) = match self {
            Size::Tiny => (64, 2, 2, 128),
            Size::Small => (256, 4, 4, 256),
            Size::Base => (768, 12, 12, 1024),
        };
        Config {
            vocab_size,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            n_inner: 4 * n_embd,
            activation: crate::config::Activation::GeluTanh,
            layer_norm_epsilon: 1e-5,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            reorder_and_upcast_attn: false,
            tie_word_embeddings: true,
            bos_token_id: Some(eos),
            eos_token_id: Some(eos),
        }
    }
}

/// How long to train.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Length {
    Steps(usize),
    /// Passes over the training tokens (held-out tokens not counted), rounded up to whole steps.
    Epochs(f64),
    /// Passes over the training tokens, but no more than this many steps: a fixed time for a
    /// large archive, without learning a small one by heart.
    EpochsUpTo(f64, usize),
}

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    pub length: Length,
    pub batch_size: usize,
    /// Tokens per training window (capped at the model's n_positions).
    pub block_size: usize,
    pub learning_rate: f64,
    /// Steps of linear warmup; by default a twentieth of the steps (at least one).
    pub warmup_steps: Option<usize>,
    pub weight_decay: f64,
    pub seed: u64,
    /// Share of the tokens, taken from the end, kept out of training to measure perplexity.
    pub heldout_fraction: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            length: Length::Steps(1000),
            batch_size: 8,
            block_size: 128,
            learning_rate: 1e-3,
            warmup_steps: None,
            weight_decay: 0.01,
            seed: 0,
            heldout_fraction: 0.05,
        }
    }
}

/// What one step did, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    pub step: usize,
    pub loss: f64,
    pub learning_rate: f64,
    /// Tokens trained on in this step.
    pub tokens: usize,
}

/// Training variables, by HF name, in the layout the model computes with (Conv1D as [out, in]).
struct Vars(Vec<(String, Var)>);

impl Vars {
    fn get(&self, name: &str) -> Result<&Var> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| Error::MissingTensor {
                file: "training variables",
                name: name.to_owned(),
            })
    }
}

impl TensorSource for Vars {
    fn tensor(&self, name: &str, _shape: &[usize]) -> Result<Tensor> {
        Ok(self.get(name)?.as_tensor().clone())
    }

    fn linear_weight(&self, name: &str, _n_in: usize, _n_out: usize) -> Result<Tensor> {
        Ok(self.get(name)?.as_tensor().clone())
    }
}

/// Is `name` a Conv1D weight (stored [in, out] by HF, [out, in] here)?
fn is_conv1d_weight(name: &str) -> bool {
    name.ends_with(".weight") && (name.contains(".attn.c_") || name.contains(".mlp.c_"))
}

/// N(0, std²) values from a seeded stream (Box–Muller), the same on every machine.
fn normal(rng: &mut ChaCha8Rng, n: usize, std: f64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            let u2: f64 = rng.random();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * std) as f32
        })
        .collect()
}

/// How many of `n` tokens are trained on; the rest, at least one window of `block + 1`, is held
/// out.
fn training_split(n: usize, block: usize, heldout_fraction: f64) -> usize {
    let heldout = ((n as f64 * heldout_fraction) as usize).max(block + 1);
    n.saturating_sub(heldout)
}

/// Steps that pass `epochs` times over `tokens` training tokens, `per_step` at a time.
fn epochs_to_steps(epochs: f64, tokens: usize, per_step: usize) -> usize {
    ((epochs * tokens as f64) / per_step.max(1) as f64)
        .ceil()
        .max(1.0) as usize
}

/// A model being trained, its optimizer and its data.
pub struct Trainer {
    cfg: Config,
    vars: Vars,
    model: Gpt2,
    opt: AdamW,
    train: Vec<u32>,
    heldout: Vec<u32>,
    opts: TrainOptions,
    /// Total steps, from `opts.length`.
    steps: usize,
    warmup: usize,
    rng: ChaCha8Rng,
    step: usize,
}

impl Trainer {
    /// Starts from `init` (a checkpoint of the same config, to fine-tune) or from GPT-2's
    /// initialisation (N(0, 0.02), residual projections scaled by 1/√(2·n_layer)).
    pub fn new(
        cfg: Config,
        init: Option<&Weights>,
        tokens: Vec<u32>,
        opts: TrainOptions,
    ) -> Result<Self> {
        let dev = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(Error::Dataset(format!(
                "token id {bad} is outside the model's vocabulary"
            )));
        }
        let block = opts.block_size.min(cfg.n_positions);
        let split = training_split(tokens.len(), block, opts.heldout_fraction);
        if split < block + 1 {
            return Err(Error::Dataset(format!(
                "{} tokens are too few to train with windows of {block} and a held-out part",
                tokens.len()
            )));
        }
        let mut vars = Vec::new();
        for (name, hf_shape) in expected_tensors(&cfg) {
            let conv = is_conv1d_weight(&name);
            let shape: Vec<usize> = if conv {
                vec![hf_shape[1], hf_shape[0]]
            } else {
                hf_shape.clone()
            };
            let t = match init {
                Some(w) => {
                    let t = w.get(&name, &hf_shape, &dev)?;
                    if conv {
                        t.t()?.contiguous()?
                    } else {
                        t
                    }
                }
                None => {
                    let n: usize = shape.iter().product();
                    let data = if name.contains("ln_") {
                        vec![if name.ends_with(".weight") { 1.0 } else { 0.0 }; n]
                    } else if name.ends_with(".bias") {
                        vec![0.0; n]
                    } else {
                        let residual = name.ends_with("attn.c_proj.weight")
                            || name.ends_with("mlp.c_proj.weight");
                        let std = if residual {
                            0.02 / (2.0 * cfg.n_layer as f64).sqrt()
                        } else {
                            0.02
                        };
                        normal(&mut rng, n, std)
                    };
                    Tensor::from_vec(data, shape.as_slice(), &dev)?
                }
            };
            vars.push((name, Var::from_tensor(&t.to_dtype(DType::F32)?)?));
        }
        let vars = Vars(vars);
        let model = Gpt2::from_source(&cfg, &vars, crate::Dtype::F32)?;
        let params = ParamsAdamW {
            lr: opts.learning_rate,
            weight_decay: opts.weight_decay,
            ..Default::default()
        };
        let opt = AdamW::new(vars.0.iter().map(|(_, v)| v.clone()).collect(), params)?;
        let steps = match opts.length {
            Length::Steps(s) => s,
            Length::Epochs(e) => epochs_to_steps(e, split, opts.batch_size * block),
            Length::EpochsUpTo(e, most) => {
                epochs_to_steps(e, split, opts.batch_size * block).min(most)
            }
        };
        Ok(Self {
            cfg,
            vars,
            model,
            opt,
            train: tokens[..split].to_vec(),
            heldout: tokens[split..].to_vec(),
            warmup: opts.warmup_steps.unwrap_or((steps / 20).max(1)),
            steps,
            opts: TrainOptions {
                block_size: block,
                ..opts
            },
            rng,
            step: 0,
        })
    }

    /// Tokens available for training and for the held-out measurement.
    pub fn token_counts(&self) -> (usize, usize) {
        (self.train.len(), self.heldout.len())
    }

    /// Steps taken so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// How many steps the run takes (its [`Length`] in steps).
    pub fn total_steps(&self) -> usize {
        self.steps
    }

    /// Linear warmup to the peak rate, then cosine decay to a tenth of it.
    fn learning_rate(&self) -> f64 {
        let (peak, warm, total) = (self.opts.learning_rate, self.warmup, self.steps.max(1));
        if self.step < warm {
            return peak * (self.step + 1) as f64 / warm as f64;
        }
        let progress = (self.step - warm) as f64 / (total.saturating_sub(warm)).max(1) as f64;
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos());
        peak * (0.1 + 0.9 * cosine)
    }

    /// Mean cross-entropy of next-token prediction over windows (B, T+1).
    fn loss(&self, windows: &[Vec<u32>]) -> Result<Tensor> {
        let b = windows.len();
        let t = windows[0].len() - 1;
        let flat = |f: &dyn Fn(&Vec<u32>) -> &[u32]| -> Vec<u32> {
            windows.iter().flat_map(|w| f(w).to_vec()).collect()
        };
        let x = Tensor::from_vec(flat(&|w| &w[..t]), (b, t), &Device::Cpu)?;
        let y = Tensor::from_vec(flat(&|w| &w[1..]), b * t, &Device::Cpu)?;
        let logits = self
            .model
            .forward_train(&x)?
            .reshape((b * t, self.cfg.vocab_size))?;
        Ok(candle_nn::loss::cross_entropy(&logits, &y)?)
    }

    /// One optimisation step on a batch of random windows of the training tokens.
    pub fn step(&mut self) -> Result<StepReport> {
        let block = self.opts.block_size;
        let windows: Vec<Vec<u32>> = (0..self.opts.batch_size)
            .map(|_| {
                let start = self.rng.random_range(0..self.train.len() - block);
                self.train[start..start + block + 1].to_vec()
            })
            .collect();
        let lr = self.learning_rate();
        self.opt.set_learning_rate(lr);
        let loss = self.loss(&windows)?;
        self.opt.backward_step(&loss)?;
        self.step += 1;
        Ok(StepReport {
            step: self.step,
            loss: f64::from(loss.to_scalar::<f32>()?),
            learning_rate: lr,
            tokens: self.opts.batch_size * block,
        })
    }

    /// The held-out tokens as consecutive windows of `block + 1`, each predicting `block` targets.
    fn heldout_windows(&self) -> Vec<&[u32]> {
        let block = self.opts.block_size;
        self.heldout.windows(block + 1).step_by(block).collect()
    }

    /// Mean next-token loss (nats) of the model on every held-out window.
    pub fn heldout_loss(&self) -> Result<f64> {
        let windows: Vec<Vec<u32>> = self
            .heldout_windows()
            .into_iter()
            .map(<[u32]>::to_vec)
            .collect();
        let mut total = 0.0;
        for chunk in windows.chunks(self.opts.batch_size.max(1)) {
            total += f64::from(self.loss(chunk)?.to_scalar::<f32>()?) * chunk.len() as f64;
        }
        Ok(total / windows.len() as f64)
    }

    /// The same measure for a unigram model of the training tokens (add-one smoothed counts):
    /// what a model reaches that knows how often each token occurs but nothing of context.
    pub fn unigram_heldout_loss(&self) -> f64 {
        let mut counts = vec![1.0f64; self.cfg.vocab_size];
        for &t in &self.train {
            counts[t as usize] += 1.0;
        }
        let total: f64 = counts.iter().sum();
        let targets: Vec<u32> = self
            .heldout_windows()
            .iter()
            .flat_map(|w| w[1..].iter().copied())
            .collect();
        let nll: f64 = targets
            .iter()
            .map(|&t| -(counts[t as usize] / total).ln())
            .sum();
        nll / targets.len() as f64
    }

    /// The trained model, usable for generation right away.
    pub fn model(&self) -> &Gpt2 {
        &self.model
    }

    /// `model.safetensors` bytes in HF's layout and key names.
    pub fn to_safetensors(&self, precision: crate::weights::Precision) -> Result<Vec<u8>> {
        let tensors = self
            .vars
            .0
            .iter()
            .map(|(name, v)| {
                let t = v.as_tensor();
                let t = if is_conv1d_weight(name) {
                    t.t()?.contiguous()?
                } else {
                    t.clone()
                };
                Ok((name.clone(), t))
            })
            .collect::<Result<Vec<_>>>()?;
        crate::weights::serialize(&tensors, precision)
    }
}
