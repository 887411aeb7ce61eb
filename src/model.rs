//! GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners") with a
//! key/value cache, numerically following HF transformers' `GPT2LMHeadModel` in f32.
//!
//! `botcard score --model tests/fixtures/models/tiny-st --text "My dream is"` runs it.
//!
//! Shapes: B batch, T new tokens, S = past + T cached positions, C = n_embd, nh heads of hs.
//! Loading gotchas, handled where they happen: HF stores Conv1D weights as [in, out] (we keep
//! [out, in] so that a later quantized matmul can take them as they are), `lm_head` is usually
//! tied to `wte`, and old checkpoints carry `attn.bias`/`attn.masked_bias` buffers we never read.

use std::ops::Range;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::LayerNorm;

use crate::attention::LayerCache;
use crate::config::{Activation, Config};
use crate::dense;
use crate::error::{Error, Result};
use crate::ggml::GgmlMatrix;
use crate::quant::{self, Dtype, Q8Matrix};
use crate::screen::Screen;
use crate::shortlist::{self, Logits};
use crate::weights::Weights;
use candle_core::quantized::GgmlDType;

/// Where a model's tensors come from: a checkpoint ([`Weights`]) or training variables.
pub trait TensorSource {
    /// The tensor `name` (HF key without `transformer.`), checked to have `shape`.
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor>;

    /// A Conv1D weight as the model uses it, [n_out, n_in]; HF stores [n_in, n_out].
    fn linear_weight(&self, name: &str, n_in: usize, n_out: usize) -> Result<Tensor> {
        Ok(self.tensor(name, &[n_in, n_out])?.t()?.contiguous()?)
    }

    /// The weight matrix `name` as the model holds it: [rows, cols] = [out, in], in `dtype`.
    fn matrix(&self, name: &str, rows: usize, cols: usize, dtype: Dtype) -> Result<Matrix> {
        let t = match matrix_layout(name) {
            Some(Layout::InOut) => self.linear_weight(name, cols, rows)?,
            _ => self.tensor(name, &[rows, cols])?,
        };
        Matrix::new(t, dtype)
    }
}

/// A weight as the model holds it, for writing it out ([`crate::gguf::write_held`]).
pub enum Held<'a> {
    /// A vector (bias, layer norm) or the position embeddings, in f32.
    Vector(&'a Tensor),
    Matrix(&'a Matrix),
}

/// How a checkpoint stores a weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// [out, in], as the model holds it: `wte`, `lm_head`.
    OutIn,
    /// [in, out]: HF's Conv1D layers (`c_attn`, `c_proj`, `c_fc`).
    InOut,
}

/// Whether the checkpoint tensor `name` is a weight matrix (held as [`Matrix`]), and how it is
/// stored; `None` for vectors and position embeddings, held as f32 tensors.
pub fn matrix_layout(name: &str) -> Option<Layout> {
    const CONV1D: [&str; 4] = [
        "attn.c_attn.weight",
        "attn.c_proj.weight",
        "mlp.c_fc.weight",
        "mlp.c_proj.weight",
    ];
    if name == "wte.weight" || name == "lm_head.weight" {
        Some(Layout::OutIn)
    } else if name.starts_with("h.") && CONV1D.iter().any(|c| name.ends_with(c)) {
        Some(Layout::InOut)
    } else {
        None
    }
}

impl TensorSource for Weights<'_> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get(name, shape, &Device::Cpu)
    }
}

/// A weight matrix W [out, in] as the model holds it: an f32 tensor, q8_0, or a 4-bit ggml
/// format read from a `model.gguf` (shared through an `Arc` where one matrix serves twice, as a
/// tied `wte` does).
#[derive(Clone)]
pub enum Matrix {
    F32(Tensor),
    Q8(Arc<Q8Matrix>),
    Ggml(Arc<GgmlMatrix>),
}

impl Matrix {
    /// Made straight from a checkpoint's bytes (`shape` as stored, in `layout`), without an f32
    /// copy of the whole tensor: rows are taken (or, stored [in, out], gathered) a few at a time
    /// and quantized.
    pub fn from_raw(
        data: &[u8],
        stored: DType,
        shape: &[usize],
        layout: Layout,
        dtype: Dtype,
    ) -> Result<Self> {
        let &[a, b] = shape else {
            return Err(Error::Parameter(format!(
                "a weight matrix of shape {shape:?}"
            )));
        };
        let (rows, cols) = match layout {
            Layout::OutIn => (a, b),
            Layout::InOut => (b, a),
        };
        let size = stored.size_in_bytes();
        if data.len() != rows * cols * size {
            return Err(Error::Parameter("weight bytes of the wrong size".into()));
        }
        if layout == Layout::OutIn {
            let mut m = MatrixRows::new(rows, cols, stored, dtype)?;
            m.push(data);
            return m.finish();
        }
        let value = |i: usize| stored_value(data, stored, i);
        // Rows [first, first + n) of W, row-major, into `out`. Column c of the stored [in, out]
        // holds W's entries c of every row: each stored row gives its run of n values (one cache
        // line) to the n rows at once.
        let fill = |first: usize, out: &mut [f32]| {
            let n = out.len() / cols;
            for c in 0..cols {
                for r in 0..n {
                    out[r * cols + c] = value(c * rows + first + r);
                }
            }
        };
        Ok(if dtype.quantizes(cols) {
            Matrix::Q8(Arc::new(Q8Matrix::from_rows(rows, cols, fill)?))
        } else {
            let mut values = vec![0f32; rows * cols];
            fill(0, &mut values);
            Matrix::F32(Tensor::from_vec(values, (rows, cols), &Device::Cpu)?)
        })
    }

    /// `t` [out, in] in `dtype`; f32 where the rows do not split into q8_0 blocks.
    pub fn new(t: Tensor, dtype: Dtype) -> Result<Self> {
        let (rows, cols) = t.dims2()?;
        Ok(if dtype.quantizes(cols) {
            let values = t.flatten_all()?.to_vec1::<f32>()?;
            drop(t);
            Matrix::Q8(Arc::new(Q8Matrix::quantize(&values, rows, cols)?))
        } else {
            Matrix::F32(t)
        })
    }

    fn rows(&self) -> Result<usize> {
        Ok(self.dims()?.0)
    }

    /// (rows, cols) = (out, in).
    pub fn dims(&self) -> Result<(usize, usize)> {
        Ok(match self {
            Matrix::F32(t) => t.dims2()?,
            Matrix::Q8(q) => (q.rows(), q.cols()),
            Matrix::Ggml(g) => (g.rows(), g.cols()),
        })
    }

    /// The ggml type it is held as.
    pub fn ggml_dtype(&self) -> GgmlDType {
        match self {
            Matrix::F32(_) => GgmlDType::F32,
            Matrix::Q8(_) => GgmlDType::Q8_0,
            Matrix::Ggml(g) => g.dtype(),
        }
    }

    /// Rows `rows` as that type's bytes, as GGUF stores them.
    pub fn ggml_bytes(&self, rows: Range<usize>) -> Result<Vec<u8>> {
        Ok(match self {
            Matrix::F32(t) => {
                let cols = t.dim(1)?;
                dense::with_values(t, |v| {
                    crate::gguf::f32_bytes(&v[rows.start * cols..rows.end * cols])
                })?
            }
            Matrix::Q8(q) => q.ggml_rows(rows),
            Matrix::Ggml(g) => g.row_bytes(rows),
        })
    }

    /// Rows `ids` as f32 (n, in): an embedding lookup.
    fn select_rows(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Matrix::F32(t) => Ok(t.index_select(ids, 0)?),
            Matrix::Q8(q) => Self::dequantized_rows(ids, q.cols(), |i| q.dequantize_row(i)),
            Matrix::Ggml(g) => Self::dequantized_rows(ids, g.cols(), |i| g.dequantize_row(i)),
        }
    }

    /// Rows `ids` of a quantized matrix with `cols` columns, each made by `row`.
    fn dequantized_rows(
        ids: &Tensor,
        cols: usize,
        row: impl Fn(usize) -> Vec<f32>,
    ) -> Result<Tensor> {
        let ids = ids.to_vec1::<u32>()?;
        let data: Vec<f32> = ids.iter().flat_map(|&i| row(i as usize)).collect();
        Ok(Tensor::from_vec(data, (ids.len(), cols), &Device::Cpu)?)
    }

    /// The name of the format it is held in.
    fn format(&self) -> &'static str {
        match self {
            Matrix::F32(_) => Dtype::F32.name(),
            Matrix::Q8(_) => Dtype::Q8_0.name(),
            Matrix::Ggml(g) => g.format(),
        }
    }

    /// Bytes the matrix holds in memory.
    fn byte_size(&self) -> usize {
        match self {
            Matrix::F32(t) => t.elem_count() * 4,
            Matrix::Q8(q) => q.byte_size(),
            Matrix::Ggml(g) => g.byte_size(),
        }
    }
}

/// Value `i` of checkpoint bytes stored as `stored` (little-endian floats).
pub(crate) fn stored_value(data: &[u8], stored: DType, i: usize) -> f32 {
    // (Random access; a run of values is read by [`extend_stored`].)
    let size = stored.size_in_bytes();
    let b = &data[i * size..(i + 1) * size];
    match stored {
        DType::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
        DType::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        DType::F64 => f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
        _ => f32::from_le_bytes(b.try_into().expect("4 bytes")),
    }
}

/// Appends to `out` every value of `data`, stored as `stored`, as f32: the type is matched once
/// for the run rather than once per value ([`stored_value`]), which made loading a checkpoint's
/// matrices and a GGUF's vectors slow in the tab.
pub(crate) fn extend_stored(out: &mut Vec<f32>, data: &[u8], stored: DType) {
    match stored {
        DType::F16 => out.extend(
            data.chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        DType::BF16 => out.extend(
            data.chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        DType::F64 => out.extend(
            data.chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32),
        ),
        _ => out.extend(
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))),
        ),
    }
}

/// A weight matrix stored [out, in] ([`Layout::OutIn`]: `wte`, `lm_head`) made as its rows
/// arrive, so the largest tensor of a streamed checkpoint is never held whole.
pub struct MatrixRows {
    rows: usize,
    cols: usize,
    stored: DType,
    q8: Option<quant::Q8Builder>,
    values: Vec<f32>,
}

impl MatrixRows {
    /// A `[rows, cols]` matrix whose bytes are stored as `stored`, to be held as `dtype`.
    pub fn new(rows: usize, cols: usize, stored: DType, dtype: Dtype) -> Result<Self> {
        let q8 = if dtype.quantizes(cols) {
            Some(quant::Q8Builder::new(rows, cols)?)
        } else {
            None
        };
        let values = if q8.is_some() {
            Vec::new()
        } else {
            Vec::with_capacity(rows * cols)
        };
        Ok(Self {
            rows,
            cols,
            stored,
            q8,
            values,
        })
    }

    /// Bytes of one stored row.
    pub fn row_bytes(&self) -> usize {
        self.cols * self.stored.size_in_bytes()
    }

    /// Rows taken so far.
    pub fn rows_done(&self) -> usize {
        match &self.q8 {
            Some(b) => b.rows_done(),
            None => self.values.len() / self.cols,
        }
    }

    /// True once every row is in.
    pub fn is_complete(&self) -> bool {
        self.rows_done() == self.rows
    }

    /// Takes the next whole rows, as stored.
    pub fn push(&mut self, data: &[u8]) {
        let n = data.len() / self.row_bytes();
        let data = &data[..n * self.row_bytes()];
        match &mut self.q8 {
            Some(b) => {
                let mut values = Vec::with_capacity(n * self.cols);
                extend_stored(&mut values, data, self.stored);
                b.push(&values);
            }
            None => extend_stored(&mut self.values, data, self.stored),
        }
    }

    /// The matrix, once every row is in.
    pub fn finish(self) -> Result<Matrix> {
        Ok(match self.q8 {
            Some(b) => Matrix::Q8(Arc::new(b.finish()?)),
            None => {
                let n = self.values.len();
                if n != self.rows * self.cols {
                    return Err(Error::Parameter(format!("{n} values for a matrix")));
                }
                Matrix::F32(Tensor::from_vec(
                    self.values,
                    (self.rows, self.cols),
                    &Device::Cpu,
                )?)
            }
        })
    }
}

/// `y = x·Wᵀ + b`, W stored [out, in]. Every weight multiplication of the model goes through
/// here, so the weight format ([`Dtype`]) changes nothing in the blocks.
struct Linear {
    weight: Matrix,
    bias: Option<Tensor>,
}

impl Linear {
    /// Its `weight` or `bias`.
    fn held(&self, part: &str) -> Option<Held<'_>> {
        match part {
            "weight" => Some(Held::Matrix(&self.weight)),
            "bias" => self.bias.as_ref().map(Held::Vector),
            _ => None,
        }
    }

    /// An HF Conv1D layer (`{name}.weight` [in, out] + `{name}.bias`).
    fn conv1d(
        w: &dyn TensorSource,
        name: &str,
        n_in: usize,
        n_out: usize,
        dtype: Dtype,
    ) -> Result<Self> {
        Ok(Self {
            weight: w.matrix(&format!("{name}.weight"), n_out, n_in, dtype)?,
            bias: Some(w.tensor(&format!("{name}.bias"), &[n_out])?),
        })
    }

    /// x: (…, in) -> (…, out), as one 2-D matmul over all leading dimensions (a broadcast
    /// batched matmul is much slower on candle's CPU backend).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_then(x, Activation::Identity)
    }

    /// `act(x·Wᵀ + b)`. In our products (q8_0, and f32 for a few rows) the bias and (when it
    /// has a scalar form) the activation are applied to each output row as soon as it is
    /// computed, on the thread that computed it.
    fn forward_then(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        let k = dims.pop().unwrap_or(1);
        let rows = dims.iter().product::<usize>();
        let x = x.contiguous()?.reshape((rows, k))?;
        dims.push(self.weight.rows()?);
        let scalar = scalar_activation(act);
        let values = match &self.weight {
            Matrix::Q8(w) => self.with_bias(|bias| {
                let x = x.flatten_all()?.to_vec1::<f32>()?;
                Ok(w.matmul_then(&x, rows, bias_then(bias, scalar)))
            })?,
            Matrix::Ggml(w) => self.with_bias(|bias| {
                let x = x.flatten_all()?.to_vec1::<f32>()?;
                Ok(w.matmul_then(&x, rows, bias_then(bias, scalar)))
            })?,
            Matrix::F32(w) => {
                // Ours for an inference pass over weights in memory: a few rows, or in wasm
                // any number, where candle's matmul runs on one thread (ours on one was as
                // fast on a 64-token prompt in Chromium, on two threads 1.8 times as fast);
                // candle's (differentiable, blocked) for training, and natively for long
                // prompts, on all cores (ours on one core took 1.5 times as long).
                let few = rows <= dense::MAX_ROWS || cfg!(target_arch = "wasm32");
                let dense = if few && !w.track_op() && !x.track_op() {
                    let n = w.dim(0)?;
                    self.with_bias(|bias| {
                        let x = x.flatten_all()?.to_vec1::<f32>()?;
                        let then = bias_then(bias, scalar);
                        dense::with_values(w, |w| dense::matmul_then(w, n, &x, rows, then))?
                            .map(Some)
                    })?
                } else {
                    None
                };
                match dense {
                    Some(values) => values,
                    None => {
                        let y = x.matmul(&w.t()?)?.reshape(dims)?;
                        let y = match &self.bias {
                            Some(b) => y.broadcast_add(b)?,
                            None => y,
                        };
                        return activate(y, act);
                    }
                }
            }
        };
        let y = Tensor::from_vec(values, dims, x.device())?;
        match scalar {
            Some(_) => Ok(y),
            None => activate(y, act),
        }
    }

    /// Calls `f` with the bias's values (None without a bias).
    fn with_bias<R>(&self, f: impl FnOnce(Option<&[f32]>) -> Result<R>) -> Result<R> {
        match &self.bias {
            None => f(None),
            Some(b) => dense::with_values(b, |v| f(Some(v)))?,
        }
    }
}

/// What a product makes of each value of output feature `o`: add the bias, then apply
/// `scalar` (the activation, when it has a scalar form; otherwise it is applied afterwards).
fn bias_then(
    bias: Option<&[f32]>,
    scalar: Option<fn(f32) -> f32>,
) -> impl Fn(usize, f32) -> f32 + Sync + Send + '_ {
    move |o, y| {
        let y = y + bias.map_or(0.0, |b| b[o]);
        scalar.map_or(y, |f| f(y))
    }
}

/// `act` as a function of one value, where it has a cheap one: what our products apply as they
/// go (none for the identity, which [`activate`] leaves as it is). Candle's op's formulas, with
/// our [`tanh`] for GELU (within 1.5 ulp of candle's libm `tanhf`, which candle's op —
/// training, and natively prompts over `dense::MAX_ROWS` rows in f32 — uses).
fn scalar_activation(act: Activation) -> Option<fn(f32) -> f32> {
    match act {
        Activation::GeluTanh => Some(|v| {
            const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
            0.5 * v * (1.0 + tanh(SQRT_TWO_OVER_PI * v * (1.0 + 0.044715 * v * v)))
        }),
        Activation::Relu => Some(|v| v.max(0.0)),
        _ => None,
    }
}

/// tanh in f32 within 1.5 ulp (the platform's `tanhf` is within about 2): an odd polynomial
/// below atanh(½), 1 − 2/(e²ˣ + 1) above, where the subtraction loses nothing. Ours because the
/// wasm `tanhf` (libm's, through `expm1f`) was 6% of a five-sample job in Chromium; this is
/// one `expf` or a few multiplications, 2.5× faster natively too.
fn tanh(x: f32) -> f32 {
    // tanh(a)/a as a polynomial in a², fitted in relative error on [0, 0.5493] (< 1.1e-9).
    const C: [f32; 6] = [
        1.0,
        -0.333_333_16,
        0.133_325_66,
        -0.053_851_42,
        0.021_070_466,
        -0.006_274_585_5,
    ];
    let a = x.abs();
    let t = if a < 0.5493 {
        let z = a * a;
        a * (C[0] + z * (C[1] + z * (C[2] + z * (C[3] + z * (C[4] + z * C[5])))))
    } else {
        1.0 - 2.0 / ((2.0 * a).exp() + 1.0)
    };
    t.copysign(x)
}

/// 1 / (1 + e^−h), as candle-nn's `ops::sigmoid` computes it, in the unary ops every model
/// already uses: candle-nn's own op is 12 KB of the page's WebAssembly.
fn sigmoid(h: &Tensor) -> Result<Tensor> {
    Ok((h.neg()?.exp()? + 1.0)?.recip()?)
}

/// `act` applied to every value of `h`, as candle ops.
fn activate(h: Tensor, act: Activation) -> Result<Tensor> {
    Ok(match act {
        Activation::GeluTanh => h.gelu()?,
        Activation::GeluErf => h.gelu_erf()?,
        Activation::QuickGelu => (&h * sigmoid(&(&h * 1.702)?)?)?,
        Activation::Relu => h.relu()?,
        Activation::Silu => h.silu()?,
        Activation::Tanh => h.tanh()?,
        Activation::Sigmoid => sigmoid(&h)?,
        Activation::Identity => h,
    })
}

/// Layer norm: candle's fused kernel for inference, plain (differentiable) ops for training.
struct Norm {
    ln: LayerNorm,
    eps: f64,
}

impl Norm {
    /// Its `weight` or `bias`.
    fn held(&self, part: &str) -> Option<Held<'_>> {
        match part {
            "weight" => Some(Held::Vector(self.ln.weight())),
            "bias" => self.ln.bias().map(Held::Vector),
            _ => None,
        }
    }

    fn load(w: &dyn TensorSource, name: &str, cfg: &Config) -> Result<Self> {
        let weight = w.tensor(&format!("{name}.weight"), &[cfg.n_embd])?;
        let bias = w.tensor(&format!("{name}.bias"), &[cfg.n_embd])?;
        Ok(Self {
            ln: LayerNorm::new(weight, bias, cfg.layer_norm_epsilon),
            eps: cfg.layer_norm_epsilon,
        })
    }

    /// Inference: candle's fused kernel, what `LayerNorm::forward` runs on the contiguous
    /// tensors inference makes. Called directly, because `LayerNorm::forward` also holds a
    /// fallback through candle's reductions, which the page's builds (they never train) then
    /// leave out: with the training path's own functions, 19.8 KB of the threaded build's
    /// gzipped wasm.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let bias = self.ln.bias().expect("GPT-2 layer norms have a bias");
        Ok(candle_nn::ops::layer_norm(
            &x.contiguous()?,
            self.ln.weight(),
            bias,
            self.eps as f32,
        )?)
    }

    /// Training: plain, differentiable ops.
    fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let y = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let bias = self.ln.bias().expect("GPT-2 layer norms have a bias");
        Ok(y.broadcast_mul(self.ln.weight())?.broadcast_add(bias)?)
    }
}

struct Attention {
    c_attn: Linear,
    c_proj: Linear,
    n_head: usize,
    /// Multiplies q·kᵀ: 1/√hs (if scale_attn_weights) · 1/(layer+1) (if by inverse layer idx).
    scale: f64,
}

impl Attention {
    fn load(w: &dyn TensorSource, layer: usize, cfg: &Config, dtype: Dtype) -> Result<Self> {
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
            c_attn: Linear::conv1d(w, &format!("{p}.c_attn"), e, 3 * e, dtype)?,
            c_proj: Linear::conv1d(w, &format!("{p}.c_proj"), e, e, dtype)?,
            n_head: cfg.n_head,
            scale,
        })
    }

    /// Inference on x: (B, T, C), against the cache, which knows which positions each query
    /// sees.
    fn forward(&self, x: &Tensor, cache: &mut LayerCache) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let hs = c / self.n_head;
        let qkv = self.c_attn.forward(x)?; // (B, T, 3C)
        let qkv = qkv.flatten_all()?.to_vec1::<f32>()?;
        cache.append(&qkv, b, t, self.n_head, hs)?;
        let y = cache.attend(&qkv, t, self.scale as f32);
        self.c_proj
            .forward(&Tensor::from_vec(y, (b, t, c), x.device())?)
    }

    /// Training on x: (B, T, C), through candle's differentiable ops; `mask` (T, T) with -inf
    /// where a query may not look (None when T = 1).
    fn forward_train(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
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
        let att = (q.matmul(&k.t()?.contiguous()?)? * self.scale)?; // (B, nh, T, T)
        let att = match mask {
            Some(m) => att.broadcast_add(m)?,
            None => att,
        };
        let att = candle_nn::ops::softmax(&att, D::Minus1)?;
        let y = att.matmul(&v)?; // (B, nh, T, hs)
        let y = y.transpose(1, 2)?.reshape((b, t, c))?; // (B, T, C)
        self.c_proj.forward(&y)
    }
}

struct Mlp {
    c_fc: Linear,
    c_proj: Linear,
    act: Activation,
}

impl Mlp {
    fn load(w: &dyn TensorSource, layer: usize, cfg: &Config, dtype: Dtype) -> Result<Self> {
        let p = format!("h.{layer}.mlp");
        Ok(Self {
            c_fc: Linear::conv1d(w, &format!("{p}.c_fc"), cfg.n_embd, cfg.n_inner, dtype)?,
            c_proj: Linear::conv1d(w, &format!("{p}.c_proj"), cfg.n_inner, cfg.n_embd, dtype)?,
            act: cfg.activation,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.c_proj.forward(&self.c_fc.forward_then(x, self.act)?)
    }
}

struct Block {
    ln_1: Norm,
    attn: Attention,
    ln_2: Norm,
    mlp: Mlp,
}

impl Block {
    fn load(w: &dyn TensorSource, layer: usize, cfg: &Config, dtype: Dtype) -> Result<Self> {
        Ok(Self {
            ln_1: Norm::load(w, &format!("h.{layer}.ln_1"), cfg)?,
            attn: Attention::load(w, layer, cfg, dtype)?,
            ln_2: Norm::load(w, &format!("h.{layer}.ln_2"), cfg)?,
            mlp: Mlp::load(w, layer, cfg, dtype)?,
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut LayerCache) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.ln_1.forward(x)?, cache)?)?;
        Ok((&x + self.mlp.forward(&self.ln_2.forward(&x)?)?)?)
    }

    /// [`Block::forward`] for training (see [`Gpt2::forward_train`]).
    fn forward_train(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let x = (x + self
            .attn
            .forward_train(&self.ln_1.forward_train(x)?, mask)?)?;
        Ok((&x + self.mlp.forward(&self.ln_2.forward_train(&x)?)?)?)
    }
}

/// The key/value cache of one generation, and the absolute position it has reached. Positions
/// live here, not in the caller, so incremental decoding sees the same positions as a full pass.
pub struct Cache {
    layers: Vec<LayerCache>,
    pos: usize,
}

impl Cache {
    /// Number of positions already processed.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Keeps batch rows `rows` of what the cache holds, in that order; an index may repeat, so
    /// one prefilled prompt can become the start of several sequences.
    pub fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        for layer in &mut self.layers {
            layer.select_rows(rows)?;
        }
        Ok(())
    }
}

/// A loaded GPT-2 language model.
pub struct Gpt2 {
    wte: Matrix,
    wpe: Tensor,
    h: Vec<Block>,
    ln_f: Norm,
    /// (V, C); the same tensor as `wte` when tied.
    lm_head: Linear,
    /// For an f32 `lm_head` outside training: what lets a step compute only the logits its
    /// sampler can pick from ([`Gpt2::next_logits_for`]).
    screen: Option<Screen>,
    /// Set by [`Gpt2::compute_every_logit`]: the sampler gets whole rows, not shortlists.
    whole_rows: bool,
    cfg: Config,
    device: Device,
}

impl Gpt2 {
    /// Builds the model from a tensor source: checkpoint [`Weights`] (every shape checked
    /// against `cfg`), or training variables (the model then computes with the variables
    /// themselves, so optimizer steps show at once; `dtype` must then be [`Dtype::F32`]).
    /// Weight matrices are converted to `dtype` one at a time, as they are read.
    pub fn from_source(cfg: &Config, w: &dyn TensorSource, dtype: Dtype) -> Result<Self> {
        let wte = w.matrix("wte.weight", cfg.vocab_size, cfg.n_embd, dtype)?;
        let wpe = w.tensor("wpe.weight", &[cfg.n_positions, cfg.n_embd])?;
        let h = (0..cfg.n_layer)
            .map(|l| Block::load(w, l, cfg, dtype))
            .collect::<Result<_>>()?;
        let ln_f = Norm::load(w, "ln_f", cfg)?;
        // A stored lm_head.weight in a tied model is a copy of wte: use wte, as HF does.
        let lm_head = if cfg.tie_word_embeddings {
            wte.clone()
        } else {
            w.matrix("lm_head.weight", cfg.vocab_size, cfg.n_embd, dtype)?
        };
        let screen = match &lm_head {
            // Training variables change with every step; a screen would go stale.
            Matrix::F32(t) if !t.is_variable() => {
                dense::with_values(t, |v| Screen::new(v, cfg.vocab_size, cfg.n_embd))??
            }
            _ => None,
        };
        Ok(Self {
            wte,
            wpe,
            h,
            ln_f,
            lm_head: Linear {
                weight: lm_head,
                bias: None,
            },
            screen,
            whole_rows: false,
            cfg: cfg.clone(),
            device: Device::Cpu,
        })
    }

    /// The architecture this model was built with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The weight `name` (HF's, as [`crate::weights::expected_tensors`] lists them) as the
    /// model holds it; `None` for a name it does not hold (a tied `lm_head.weight`).
    pub fn held(&self, name: &str) -> Option<Held<'_>> {
        match name {
            "wte.weight" => return Some(Held::Matrix(&self.wte)),
            "wpe.weight" => return Some(Held::Vector(&self.wpe)),
            "lm_head.weight" if !self.cfg.tie_word_embeddings => {
                return Some(Held::Matrix(&self.lm_head.weight))
            }
            _ => {}
        }
        if let Some(part) = name.strip_prefix("ln_f.") {
            return self.ln_f.held(part);
        }
        let (layer, rest) = name.strip_prefix("h.")?.split_once('.')?;
        let b = self.h.get(layer.parse::<usize>().ok()?)?;
        let (module, part) = rest.rsplit_once('.')?;
        match module {
            "ln_1" => b.ln_1.held(part),
            "ln_2" => b.ln_2.held(part),
            "attn.c_attn" => b.attn.c_attn.held(part),
            "attn.c_proj" => b.attn.c_proj.held(part),
            "mlp.c_fc" => b.mlp.c_fc.held(part),
            "mlp.c_proj" => b.mlp.c_proj.held(part),
            _ => None,
        }
    }

    /// The format its weight matrices are held in ("f32", "q8_0", "q4_0", "q4k"; a file's
    /// few matrices whose rows do not fill its blocks may be held otherwise), as the first
    /// block's MLP holds it.
    pub fn held_as(&self) -> &'static str {
        self.h
            .first()
            .map_or(Dtype::F32.name(), |b| b.mlp.c_fc.weight.format())
    }

    /// Bytes its weights take in memory (a tied matrix counted once, an f32 model's screen
    /// included).
    pub fn weight_bytes(&self) -> usize {
        let head = if self.cfg.tie_word_embeddings {
            0
        } else {
            self.lm_head.weight.byte_size()
        };
        let screen = self.screen.as_ref().map_or(0, Screen::byte_size);
        self.wte.byte_size() + self.wpe.elem_count() * 4 + self.layer_bytes() + head + screen
    }

    /// Bytes of weights one decode step reads: the layers' and the output matrix's, a screened
    /// one through its screen (plus the few rows it computes exactly, not counted).
    pub fn step_read_bytes(&self) -> usize {
        let head = match &self.screen {
            Some(s) => s.byte_size(),
            None => self.lm_head.weight.byte_size(),
        };
        self.layer_bytes() + head
    }

    /// Bytes of the blocks' and the final layer norm's weights.
    fn layer_bytes(&self) -> usize {
        let tensor = |t: &Tensor| t.elem_count() * 4;
        let linear = |l: &Linear| l.weight.byte_size() + l.bias.as_ref().map_or(0, tensor);
        let norm = |n: &Norm| tensor(n.ln.weight()) + n.ln.bias().map_or(0, tensor);
        let blocks: usize = self
            .h
            .iter()
            .map(|b| {
                norm(&b.ln_1)
                    + norm(&b.ln_2)
                    + linear(&b.attn.c_attn)
                    + linear(&b.attn.c_proj)
                    + linear(&b.mlp.c_fc)
                    + linear(&b.mlp.c_proj)
            })
            .sum();
        blocks + norm(&self.ln_f)
    }

    /// An empty cache with room for `capacity` positions (it grows if needed, up to
    /// `n_positions`).
    pub fn new_cache(&self, capacity: usize) -> Cache {
        let cap = capacity.clamp(1, self.cfg.n_positions);
        Cache {
            layers: (0..self.cfg.n_layer)
                .map(|_| LayerCache::new(cap))
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
        let ids = Tensor::new(ids.concat(), &self.device)?.reshape((b, t))?;
        let mut x = self.embed(&ids, cache.pos)?;
        for (block, layer) in self.h.iter().zip(&mut cache.layers) {
            x = block.forward(&x, layer)?;
        }
        let hidden = self.ln_f.forward(&x)?;
        cache.pos += t;
        Ok(hidden)
    }

    /// The training pass: logits (B, T, V) for ids (B, T) from position 0, through
    /// differentiable ops only and without a cache. Its own path through the layers, apart
    /// from inference's, so that builds that never train leave it out.
    pub fn forward_train(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let mut x = self.embed(ids, 0)?;
        let mask = if t > 1 {
            Some(self.causal_mask(t)?)
        } else {
            None
        };
        for block in &self.h {
            x = block.forward_train(&x, mask.as_ref())?;
        }
        self.logits(&self.ln_f.forward_train(&x)?)
    }

    /// The layers' input (B, T, C) for ids (B, T) at positions past..past+T: token plus
    /// position embeddings.
    fn embed(&self, ids: &Tensor, past: usize) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let tok = self
            .wte
            .select_rows(&ids.flatten_all()?)?
            .reshape((b, t, self.cfg.n_embd))?;
        let positions = Tensor::arange(past as u32, (past + t) as u32, &self.device)?;
        let pos = self.wpe.index_select(&positions, 0)?; // (T, C)
        Ok(tok.broadcast_add(&pos)?)
    }

    /// Logits over the vocabulary for hidden states (…, C) -> (…, V).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)
    }

    /// Logits (B, V) of the next token after `ids`, the common case in generation.
    pub fn next_logits(&self, ids: &[Vec<u32>], cache: &mut Cache) -> Result<Tensor> {
        let hidden = self.forward(ids, cache)?;
        let t = hidden.dim(1)?;
        self.logits(&hidden.narrow(1, t - 1, 1)?.squeeze(1)?)
    }

    /// Logits of the next token after `ids`, one row per sequence, for a sampler that picks
    /// from the `top` most likely tokens (`None`: from any) once its processors have changed
    /// the logits of the tokens in `exact[i]` (and only those): with a `top`, each row is a
    /// [`shortlist`](crate::shortlist) of the tokens it can pick from. An f32 model's output
    /// matrix is then read through its [`crate::screen`], a quarter of its bytes.
    pub fn next_logits_for(
        &self,
        ids: &[Vec<u32>],
        cache: &mut Cache,
        top: Option<usize>,
        exact: &[&[u32]],
    ) -> Result<Vec<Logits>> {
        let hidden = self.forward(ids, cache)?;
        let t = hidden.dim(1)?;
        let last = hidden.narrow(1, t - 1, 1)?.squeeze(1)?;
        let m = last.dim(0)?;
        let vocab = self.cfg.vocab_size;
        let logits = match (top, &self.screen, &self.lm_head.weight) {
            (Some(k), Some(screen), Matrix::F32(w)) if m <= dense::MAX_ROWS => {
                let x = last.flatten_all()?.to_vec1::<f32>()?;
                dense::with_values(w, |w| screen.logits(w, &x, m, k, exact))?.concat()
            }
            _ => self.logits(&last)?.flatten_all()?.to_vec1()?,
        };
        Ok(match top {
            Some(k) if !self.whole_rows => shortlist::shortlists(logits, vocab, k, exact),
            _ => shortlist::whole_rows(&logits, vocab),
        })
    }

    /// Drops the output matrix's screen and the shortlists: every step computes every logit
    /// from then on and the sampler passes over all of them (what neither may change the text
    /// of).
    pub fn compute_every_logit(&mut self) {
        self.screen = None;
        self.whole_rows = true;
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

    /// (T, T) additive mask: query i sees keys 0..=i.
    fn causal_mask(&self, t: usize) -> Result<Tensor> {
        let data: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        Ok(Tensor::from_vec(data, (t, t), &self.device)?)
    }
}

#[cfg(test)]
mod tests {
    /// Our sigmoid (quick_gelu's and the sigmoid activation's) gives candle-nn's values bit for
    /// bit, over every 997th f32 bit pattern (NaN, infinities and subnormals included).
    #[test]
    fn sigmoid_equals_candle_nns() {
        let values: Vec<f32> = (0..u32::MAX / 997)
            .map(|i| f32::from_bits(i * 997))
            .collect();
        let h = candle_core::Tensor::new(values.as_slice(), &candle_core::Device::Cpu).unwrap();
        let ours = super::sigmoid(&h).unwrap().to_vec1::<f32>().unwrap();
        let theirs = candle_nn::ops::sigmoid(&h)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for ((a, b), v) in ours.iter().zip(&theirs).zip(&values) {
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{v}: {a} vs {b}"
            );
        }
    }

    /// Our tanh is within 1.5 ulp of tanh in f64 over every 61st float in [0, 20] (and odd).
    #[test]
    fn tanh_is_within_one_and_a_half_ulp() {
        let mut bits = 0u32;
        while bits < 20f32.to_bits() {
            let x = f32::from_bits(bits);
            let want = f64::from(x).tanh();
            let w = want as f32;
            // The spacing of floats just below the result: near 1 the smaller of the two.
            let ulp = f64::from(w - f32::from_bits(w.to_bits().saturating_sub(1)))
                .max(f64::from(f32::MIN_POSITIVE));
            let got = super::tanh(x);
            assert!(
                (f64::from(got) - want).abs() <= 1.5 * ulp,
                "tanh({x}) = {got}, not {want}"
            );
            assert_eq!(super::tanh(-x), -got);
            bits += 61;
        }
        assert_eq!(super::tanh(f32::INFINITY), 1.0);
        assert!(super::tanh(f32::NAN).is_nan());
    }
}
