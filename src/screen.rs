//! Exact next-token logits for only the tokens that can matter, from an f32 output matrix
//! without reading all of it.
//!
//! Why: decoding an f32 GPT-2 124M reads 498 MB of weights per token, 154 MB of them the tied
//! `wte`/`lm_head` (50,257 × 768), and decoding an f32 model is bound by reading its weights.
//! A sampler that keeps the `k` most likely tokens (greedy decoding: 1; huggingtweets: top_k
//! 50) needs the exact logits of only the tokens that could be among them. A q8_0 copy of the
//! matrix (a quarter of its bytes) gives every logit to within a bound proved per row (below);
//! each token whose upper bound reaches the k-th largest lower bound is then computed exactly,
//! with the same f32 kernel and order as the full product ([`dense::dot`]), and every other
//! logit is −∞, strictly below the k kept ones. The sampler then picks, bit for bit, what it
//! picks from the full logits.
//!
//! The bound, for matrix row w and activation row h, with ŵ, ĥ their q8_0 and 7-bit quantized
//! values (as [`Q8Matrix`] and its activations hold them), E the f32 product, A the quantized
//! one, u = 2⁻²⁴ and γ = (n + blocks + 4)·u:
//! |E − w·h| ≤ γ‖w‖‖h‖ (any order of n f32 products and sums);
//! |w·h − ŵ·ĥ| = |(ŵ − w)·ĥ + w·(ĥ − h)| ≤ ‖ŵ − w‖‖ĥ‖ + ‖w‖‖ĥ − h‖ (Cauchy–Schwarz);
//! |ŵ·ĥ − A| ≤ γ‖ŵ‖‖ĥ‖ ≤ γ(‖w‖ + ‖ŵ − w‖)‖ĥ‖ (exact block sums, one rounding per scale
//! product, term and sum). So |E − A| ≤ e·‖ĥ‖(1 + γ) + n·(‖ĥ − h‖ + γ(‖h‖ + ‖ĥ‖)), with
//! e = ‖ŵ − w‖ and n = ‖w‖ kept per row (rounded up) and the norms of h taken per step; the
//! sum is then widened by 2⁻¹⁶ for its own rounding.

use crate::dense;
use crate::error::Result;
use crate::quant::Q8Matrix;

/// An f32 matrix's q8_0 copy and, per row, what bounds the copy's error.
pub struct Screen {
    q8: Q8Matrix,
    /// ‖ŵ − w‖ per row, rounded up.
    err: Vec<f32>,
    /// ‖w‖ per row, rounded up.
    norm: Vec<f32>,
}

/// Relative widening that covers the rounding in evaluating a bound (a few f32 operations).
const WIDEN: f32 = 1.0 + 1.0 / 65536.0;

impl Screen {
    /// The screen of the row-major `[rows, cols]` matrix `w`; `None` where q8_0 cannot hold it
    /// (`cols` not a multiple of its blocks) or any value is not finite.
    pub fn new(w: &[f32], rows: usize, cols: usize) -> Result<Option<Self>> {
        if !cols.is_multiple_of(crate::quant::BLOCK) || w.iter().any(|v| !v.is_finite()) {
            return Ok(None);
        }
        let q8 = Q8Matrix::quantize(w, rows, cols)?;
        let up = |v: f64| (v as f32).next_up();
        let (mut err, mut norm) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
        for (r, row) in w.chunks_exact(cols).enumerate() {
            let back = q8.dequantize_row(r);
            let (mut e, mut n) = (0f64, 0f64);
            for (&a, &b) in row.iter().zip(&back) {
                e += (f64::from(b) - f64::from(a)).powi(2);
                n += f64::from(a).powi(2);
            }
            err.push(up(e.sqrt()));
            norm.push(up(n.sqrt()));
        }
        Ok(Some(Self { q8, err, norm }))
    }

    /// Bytes held in memory.
    pub fn byte_size(&self) -> usize {
        self.q8.byte_size() + 4 * (self.err.len() + self.norm.len())
    }

    /// The logits `x · wᵀ` of `m` activation rows `x` against `w` (the matrix this screen was
    /// made from), one vector per row: exact for every token in `exact[i]` and for every
    /// other token that could be among the `k` largest of the others; every other token's is
    /// −∞, and its exact logit is below those `k` by more than rounding can close.
    pub fn logits(
        &self,
        w: &[f32],
        x: &[f32],
        m: usize,
        k: usize,
        exact: &[&[u32]],
    ) -> Vec<Vec<f32>> {
        let (rows, cols) = (self.q8.rows(), self.q8.cols());
        let approx = self.q8.matmul(x, m);
        let gamma = (cols + cols / crate::quant::BLOCK + 4) as f32 * f32::EPSILON / 2.0;
        (0..m)
            .map(|i| {
                let h = &x[i * cols..(i + 1) * cols];
                let a = &approx[i * rows..(i + 1) * rows];
                let (h0, h1, h2) = activation_norms(h);
                if !(h0.is_finite() && h1.is_finite() && h2.is_finite()) {
                    return dense_row(w, h, cols);
                }
                let (p, q) = (h1 * (1.0 + gamma), h2 + gamma * (h0 + h1));
                let bound = |t: usize| (self.err[t] * p + self.norm[t] * q) * WIDEN;
                let mut fixed = vec![false; rows];
                for &t in exact.get(i).copied().unwrap_or_default() {
                    if let Some(f) = fixed.get_mut(t as usize) {
                        *f = true;
                    }
                }
                // The k-th largest lower bound among the tokens not computed anyway, lowered by
                // more than a temperature's division can round away.
                let mut lower: Vec<f32> = (0..rows)
                    .filter(|&t| !fixed[t])
                    .map(|t| a[t] - bound(t))
                    .collect();
                let floor = match k.min(lower.len()) {
                    0 => f32::INFINITY,
                    k => {
                        let (_, kth, _) =
                            lower.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
                        crate::shortlist::below(*kth)
                    }
                };
                let mut out = vec![f32::NEG_INFINITY; rows];
                for t in 0..rows {
                    if fixed[t] || a[t] + bound(t) >= floor {
                        out[t] = dense::dot(&w[t * cols..(t + 1) * cols], h);
                    }
                }
                out
            })
            .collect()
    }
}

/// Every logit of `h`, exact.
fn dense_row(w: &[f32], h: &[f32], cols: usize) -> Vec<f32> {
    w.chunks_exact(cols).map(|r| dense::dot(r, h)).collect()
}

/// ‖h‖, ‖ĥ‖ and ‖ĥ − h‖ for the activation row `h`, ĥ quantized as the q8_0 product quantizes
/// it, each rounded up.
fn activation_norms(h: &[f32]) -> (f32, f32, f32) {
    let q = crate::quant::QuantizedRows::new(h, 1, h.len());
    let (values, scales) = q.parts();
    let (mut n0, mut n1, mut n2) = (0f64, 0f64, 0f64);
    for (c, (&v, &x)) in values.iter().zip(h).enumerate() {
        let back = f64::from(i32::from(v) - i32::from(crate::quant::BIAS))
            * f64::from(scales[c / crate::quant::BLOCK]);
        n0 += f64::from(x).powi(2);
        n1 += back.powi(2);
        n2 += (back - f64::from(x)).powi(2);
    }
    let up = |v: f64| (v.sqrt() as f32).next_up();
    (up(n0), up(n1), up(n2))
}
