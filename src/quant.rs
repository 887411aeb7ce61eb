//! Weights in ggml's q8_0 format (blocks of 32 signed bytes sharing one scale) and the matrix
//! product the model's linear layers run on them.
//!
//! Why our own kernel rather than candle's `QMatMul`: candle keeps each block's scale as f16 and
//! converts two of them per block inside its dot product (a software conversion in wasm), runs
//! one activation row at a time (a batch of B rows reads every weight B times), and in wasm runs
//! on one thread. Here scales are f32 in memory (rounded through f16 when quantized, as ggml
//! stores them, so a GGUF file round-trips exactly), activations are quantized once per row,
//! every weight block is loaded once for up to [`ROW_GROUP`] activation rows, and the output rows
//! split into independent ranges ([`Q8Matrix::matmul_rows`]) a caller may spread over threads.
//!
//! Activations are quantized to 7 bits (±63) and held biased by [`BIAS`] as bytes in 1..=127,
//! because that is what the fast integer dot products take: wasm's relaxed-simd
//! `i32x4.relaxed_dot_i8x16_i7x16_add_s` (one x86 `vpdpbusd` on VNNI machines; exact only when
//! one operand is below 128 unsigned) and x86's u8×i8 `vpdpbusd`/`pmaddubsw`. The bias comes
//! back off exactly with each weight block's sum (Σ w·(x+64) − 64·Σ w), so every kernel computes
//! the same integers, adds them in the same order ([`dot_scalar`] spells it out), and the CLI,
//! the plain simd128 build and the relaxed-simd build write the same text.

use std::ops::Range;

use half::f16;

use crate::error::{Error, Result};

/// Values per q8_0 block.
pub const BLOCK: usize = 32;

/// Activation rows that share one pass over a weight row.
const ROW_GROUP: usize = 4;

/// Largest quantized weight magnitude (ggml's q8_0).
const WEIGHT_LEVELS: u8 = 127;

/// Largest quantized activation magnitude: 7 bits, see the module comment.
const ACTIVATION_LEVELS: u8 = 63;

/// What quantized activations are offset by so that they are non-negative bytes: 1 << 6, so
/// kernels take 64·Σw as a shift.
pub const BIAS: u8 = 1 << BIAS_SHIFT;
const BIAS_SHIFT: i32 = 6;

/// How the model holds its weight matrices in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dtype {
    /// The checkpoint's numbers as f32: HF transformers' exact numerics.
    F32,
    /// ggml's q8_0: 8-bit weights, one scale per 32 — a quarter of f32's bytes, and faster.
    #[default]
    Q8_0,
}

impl Dtype {
    /// Every dtype, in the order the CLI and the page list them.
    pub const ALL: [Dtype; 2] = [Dtype::F32, Dtype::Q8_0];

    /// The name users type (`--dtype q8_0`, `dtype="f32"`), as ggml and GGUF spell it.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Q8_0 => "q8_0",
        }
    }

    /// Whether a weight matrix with rows of `cols` values is held quantized: q8_0 needs whole
    /// blocks, other matrices stay f32.
    pub fn quantizes(self, cols: usize) -> bool {
        self == Dtype::Q8_0 && cols.is_multiple_of(BLOCK)
    }

    /// Whether a model loaded as this dtype is kept (cached) as it is held rather than as the
    /// checkpoint it came from: where loading changed the numbers, the held form is both smaller
    /// and what the next load would make again; f32 keeps the checkpoint's own bytes.
    pub fn caches_held(self) -> bool {
        self != Dtype::F32
    }

    /// Reads a dtype name.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|d| d.name()).collect();
                Error::Parameter(format!(
                    "unknown dtype `{name}` (known: {})",
                    names.join(", ")
                ))
            })
    }
}

/// Quantizes `x` (a multiple of [`BLOCK`] long) as ggml's `quantize_row_q8_0_ref` does, with
/// `L` levels each side: per block, scale = max|x| / L, values rounded half away from zero.
/// Writes one scale per block (not rounded: `f16` rounding is the caller's choice).
fn quantize_blocks<const L: u8>(x: &[f32], qs: &mut [i8], scales: &mut [f32]) {
    for ((xb, qb), s) in x
        .chunks_exact(BLOCK)
        .zip(qs.chunks_exact_mut(BLOCK))
        .zip(scales.iter_mut())
    {
        *s = quantize_block::<L>(xb.try_into().expect("a block"), qb);
    }
}

/// One block: returns its scale and writes its values.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn quantize_block<const L: u8>(xb: &[f32; BLOCK], qb: &mut [i8]) -> f32 {
    let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / f32::from(L);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, v) in qb.iter_mut().zip(xb) {
        *q = (v * id).round() as i8;
    }
    d
}

/// One block with simd128: the same numbers as the scalar version (round half away from zero
/// as truncation plus a step of ±1 where the fraction is at least ½; exact below 2²³), without
/// a libm `roundf` call per value — quantizing a 124M model at load is 124M of them.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn quantize_block<const L: u8>(xb: &[f32; BLOCK], qb: &mut [i8]) -> f32 {
    use core::arch::wasm32::*;
    // SAFETY: xb is 32 f32 (8 unaligned v128 loads); qb is 32 bytes (2 v128 stores).
    unsafe {
        let p = xb.as_ptr() as *const v128;
        let v: [v128; 8] = core::array::from_fn(|i| v128_load(p.add(i)));
        let mut m = f32x4_abs(v[0]);
        for x in &v[1..] {
            m = f32x4_max(m, f32x4_abs(*x));
        }
        let amax = f32x4_extract_lane::<0>(m)
            .max(f32x4_extract_lane::<1>(m))
            .max(f32x4_extract_lane::<2>(m))
            .max(f32x4_extract_lane::<3>(m));
        let d = amax / f32::from(L);
        let id = f32x4_splat(if d != 0.0 { 1.0 / d } else { 0.0 });
        let round = |x: v128| -> v128 {
            let t = f32x4_mul(x, id);
            let r = f32x4_trunc(t);
            let away = f32x4_ge(f32x4_abs(f32x4_sub(t, r)), f32x4_splat(0.5));
            let one = v128_or(f32x4_splat(1.0), v128_and(t, u32x4_splat(0x8000_0000)));
            i32x4_trunc_sat_f32x4(f32x4_add(r, v128_and(away, one)))
        };
        let q = qb.as_mut_ptr() as *mut v128;
        for half in 0..2 {
            let w = &v[half * 4..half * 4 + 4];
            let lo = i16x8_narrow_i32x4(round(w[0]), round(w[1]));
            let hi = i16x8_narrow_i32x4(round(w[2]), round(w[3]));
            v128_store(q.add(half), i8x16_narrow_i16x8(lo, hi));
        }
        d
    }
}

/// A weight matrix `[rows, cols]` (a linear layer's `[out, in]`) in q8_0.
#[derive(Clone)]
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    /// rows × cols quantized values, row-major.
    qs: Vec<i8>,
    /// rows × cols/BLOCK scales, as f16 values held in f32.
    scales: Vec<f32>,
    /// rows × cols/BLOCK sums of each block's values: what takes [`BIAS`] back off.
    sums: Vec<i16>,
}

impl Q8Matrix {
    /// Quantizes a row-major `[rows, cols]` f32 matrix; `cols` must be a multiple of [`BLOCK`].
    pub fn quantize(values: &[f32], rows: usize, cols: usize) -> Result<Self> {
        if values.len() != rows * cols {
            return Err(Error::Parameter(format!(
                "{} values for a [{rows}, {cols}] matrix",
                values.len()
            )));
        }
        let mut builder = Q8Builder::new(rows, cols)?;
        builder.push(values);
        builder.finish()
    }

    /// Quantizes a `[rows, cols]` matrix handed over a few rows at a time: `fill(first, out)`
    /// writes rows `first..first + out.len() / cols`, row-major, so no f32 copy of the whole
    /// matrix is ever made.
    pub fn from_rows(
        rows: usize,
        cols: usize,
        mut fill: impl FnMut(usize, &mut [f32]),
    ) -> Result<Self> {
        const ROWS_AT_ONCE: usize = 16;
        let mut builder = Q8Builder::new(rows, cols)?;
        let mut buf = vec![0f32; ROWS_AT_ONCE * cols];
        for first in (0..rows).step_by(ROWS_AT_ONCE) {
            let part = &mut buf[..ROWS_AT_ONCE.min(rows - first) * cols];
            fill(first, part);
            builder.push(part);
        }
        builder.finish()
    }

    /// Builds a matrix from stored q8_0 data (a GGUF tensor): `scales` one per block.
    pub fn from_parts(rows: usize, cols: usize, qs: Vec<i8>, scales: Vec<f32>) -> Result<Self> {
        if !cols.is_multiple_of(BLOCK)
            || qs.len() != rows * cols
            || scales.len() * BLOCK != qs.len()
        {
            return Err(Error::Parameter(format!(
                "q8_0 data does not fit a [{rows}, {cols}] matrix"
            )));
        }
        let sums = qs
            .chunks_exact(BLOCK)
            .map(|b| b.iter().map(|&v| i16::from(v)).sum())
            .collect();
        Ok(Self {
            rows,
            cols,
            qs,
            scales,
            sums,
        })
    }

    /// Builds a matrix from ggml's q8_0 blocks (an f16 scale, then 32 signed bytes; GGUF's
    /// tensor data), `rows × cols` row-major.
    pub fn from_ggml_bytes(rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        let blocks = bytes.chunks_exact(2 + BLOCK);
        if !blocks.remainder().is_empty() {
            return Err(Error::Parameter("q8_0 data of a partial block".into()));
        }
        let mut qs = Vec::with_capacity(blocks.len() * BLOCK);
        let mut scales = Vec::with_capacity(blocks.len());
        for b in blocks {
            scales.push(f16::from_le_bytes([b[0], b[1]]).to_f32());
            qs.extend(b[2..].iter().map(|&q| q as i8));
        }
        Self::from_parts(rows, cols, qs, scales)
    }

    /// Rows `rows` of the matrix as ggml's q8_0 blocks ([`Self::from_ggml_bytes`] reads the
    /// whole matrix's back).
    pub fn ggml_rows(&self, rows: Range<usize>) -> Vec<u8> {
        let nb = self.cols / BLOCK;
        let scales = &self.scales[rows.start * nb..rows.end * nb];
        let qs = &self.qs[rows.start * self.cols..rows.end * self.cols];
        let mut out = Vec::with_capacity(scales.len() * (2 + BLOCK));
        for (q, &s) in qs.chunks_exact(BLOCK).zip(scales) {
            out.extend_from_slice(&f16::from_f32(s).to_le_bytes());
            out.extend(q.iter().map(|&v| v as u8));
        }
        out
    }

    /// Output features (rows).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features (columns).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The quantized values and the per-block scales, row-major.
    pub fn parts(&self) -> (&[i8], &[f32]) {
        (&self.qs, &self.scales)
    }

    /// Bytes held in memory.
    pub fn byte_size(&self) -> usize {
        self.qs.len() + 4 * self.scales.len() + 2 * self.sums.len()
    }

    /// Row `r` back as f32 (an embedding lookup in a tied embedding matrix).
    pub fn dequantize_row(&self, r: usize) -> Vec<f32> {
        let nb = self.cols / BLOCK;
        self.qs[r * self.cols..(r + 1) * self.cols]
            .chunks_exact(BLOCK)
            .zip(&self.scales[r * nb..(r + 1) * nb])
            .flat_map(|(q, &s)| q.iter().map(move |&v| f32::from(v) * s))
            .collect()
    }

    /// `x · Wᵀ` for `x` of `m` rows of `cols` values: `m × rows` values, row-major.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_then(x, m, |_, _| {})
    }

    /// [`matmul`](Q8Matrix::matmul), calling `then(o, values)` with output feature `o`'s `m`
    /// values as soon as they are computed (a bias, an activation), on the same thread.
    pub fn matmul_then<F>(&self, x: &[f32], m: usize, then: F) -> Vec<f32>
    where
        F: Fn(usize, &mut [f32]) + Sync + Send,
    {
        let xq = QuantizedRows::new(x, m, self.cols);
        crate::parallel::by_output_rows(self.rows, m, |range, out| {
            let first = range.start;
            self.matmul_rows(&xq, range, out);
            for (o, values) in out.chunks_exact_mut(m).enumerate() {
                then(first + o, values);
            }
        })
    }

    /// Output rows `range` of `x · Wᵀ`, written to `out` output-row-major (`range.len() × m`:
    /// all of output row r's activations together), so disjoint ranges can run on different
    /// threads and be put together afterwards.
    pub fn matmul_rows(&self, x: &QuantizedRows, range: std::ops::Range<usize>, out: &mut [f32]) {
        debug_assert_eq!(x.cols, self.cols);
        debug_assert_eq!(out.len(), range.len() * x.m);
        let nb = self.cols / BLOCK;
        for (o, out_row) in range.zip(out.chunks_exact_mut(x.m)) {
            let w = Row {
                qs: &self.qs[o * self.cols..(o + 1) * self.cols],
                scales: &self.scales[o * nb..(o + 1) * nb],
                sums: &self.sums[o * nb..(o + 1) * nb],
            };
            for (g, out_group) in out_row.chunks_mut(ROW_GROUP).enumerate() {
                let first = g * ROW_GROUP;
                let n = out_group.len();
                kernel::dot_rows(
                    w,
                    &x.qs[first * self.cols..(first + n) * self.cols],
                    &x.scales[first * nb..(first + n) * nb],
                    out_group,
                );
            }
        }
    }
}

/// One weight row as the kernels take it.
#[derive(Clone, Copy)]
struct Row<'a> {
    qs: &'a [i8],
    scales: &'a [f32],
    sums: &'a [i16],
}

impl Row<'_> {
    /// Block `j`'s term of the dot product with one biased activation row `x` (scales `xs`):
    /// the block's exact integer sum, bias taken off, times its two scales — what every kernel
    /// adds per block, here one value at a time.
    #[inline(always)]
    fn block_term(&self, j: usize, x: &[u8], xs: &[f32]) -> f32 {
        let (wb, xb) = (&self.qs[j * BLOCK..][..BLOCK], &x[j * BLOCK..][..BLOCK]);
        let s: i32 = wb
            .iter()
            .zip(xb)
            .map(|(&w, &x)| i32::from(w) * i32::from(x))
            .sum();
        (s - i32::from(self.sums[j]) * i32::from(BIAS)) as f32 * (self.scales[j] * xs[j])
    }
}

/// A [`Q8Matrix`] quantized as its rows arrive, first to last.
pub struct Q8Builder {
    rows: usize,
    cols: usize,
    qs: Vec<i8>,
    scales: Vec<f32>,
    done: usize,
}

impl Q8Builder {
    /// An empty `[rows, cols]` matrix; `cols` must be a multiple of [`BLOCK`].
    pub fn new(rows: usize, cols: usize) -> Result<Self> {
        if !cols.is_multiple_of(BLOCK) {
            return Err(Error::Parameter(format!(
                "q8_0 needs rows of a multiple of {BLOCK} values; got [{rows}, {cols}]"
            )));
        }
        Ok(Self {
            rows,
            cols,
            qs: vec![0; rows * cols],
            scales: vec![0.0; rows * cols / BLOCK],
            done: 0,
        })
    }

    /// Rows quantized so far.
    pub fn rows_done(&self) -> usize {
        self.done
    }

    /// Quantizes the next rows: `values` holds whole rows, row-major, no more than remain.
    pub fn push(&mut self, values: &[f32]) {
        let n = values.len() / self.cols;
        assert!(
            n * self.cols == values.len() && self.done + n <= self.rows,
            "whole rows"
        );
        let (from, to) = (self.done * self.cols, (self.done + n) * self.cols);
        let scales = &mut self.scales[from / BLOCK..to / BLOCK];
        quantize_blocks::<WEIGHT_LEVELS>(values, &mut self.qs[from..to], scales);
        // Scales are stored as ggml stores them: f16.
        for s in scales {
            *s = f16::from_f32(*s).to_f32();
        }
        self.done += n;
    }

    /// The matrix, once every row is in.
    pub fn finish(self) -> Result<Q8Matrix> {
        if self.done != self.rows {
            return Err(Error::Parameter(format!(
                "{} of {} rows were quantized",
                self.done, self.rows
            )));
        }
        Q8Matrix::from_parts(self.rows, self.cols, self.qs, self.scales)
    }
}

/// Activation rows quantized to 7 bits per value and one scale per block (see the module
/// comment), held biased by [`BIAS`]; made once per matrix product and shared by every output
/// row.
pub struct QuantizedRows {
    m: usize,
    cols: usize,
    qs: Vec<u8>,
    scales: Vec<f32>,
}

impl QuantizedRows {
    /// Quantizes `m` rows of `cols` values (a multiple of [`BLOCK`]).
    pub fn new(x: &[f32], m: usize, cols: usize) -> Self {
        assert!(
            cols.is_multiple_of(BLOCK) && x.len() == m * cols,
            "[{m}, {cols}] rows"
        );
        let mut q = vec![0i8; m * cols];
        let mut scales = vec![0f32; m * cols / BLOCK];
        quantize_blocks::<ACTIVATION_LEVELS>(x, &mut q, &mut scales);
        Self {
            m,
            cols,
            qs: q
                .into_iter()
                .map(|v| v.wrapping_add_unsigned(BIAS) as u8)
                .collect(),
            scales,
        }
    }

    /// The quantized values plus [`BIAS`], and the per-block scales, row-major.
    pub fn parts(&self) -> (&[u8], &[f32]) {
        (&self.qs, &self.scales)
    }
}

/// The reference: one weight row `w` (scales `ws`) against one activation row `x` (biased by
/// [`BIAS`]; scales `xs`). Each block's exact integer sum times its two scales goes to one of
/// four running totals, block j to total j mod 4, and the result is (t₀ + t₁) + (t₂ + t₃): the
/// order the SIMD kernels add four blocks at a time in, so they equal this bit for bit.
pub fn dot_scalar(w: &[i8], ws: &[f32], x: &[u8], xs: &[f32]) -> f32 {
    let mut t = [0f32; 4];
    for (j, ((wb, xb), (a, b))) in w
        .chunks_exact(BLOCK)
        .zip(x.chunks_exact(BLOCK))
        .zip(ws.iter().zip(xs))
        .enumerate()
    {
        let sum: i32 = wb
            .iter()
            .zip(xb)
            .map(|(&p, &q)| i32::from(p) * (i32::from(q) - i32::from(BIAS)))
            .sum();
        t[j % 4] += sum as f32 * (a * b);
    }
    (t[0] + t[1]) + (t[2] + t[3])
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod kernel {
    //! wasm: per group of four blocks, each block's i32x4 partial sums of w·(x + 64) are
    //! transposed into one i32x4 of exact block sums, the bias is taken off with the blocks'
    //! weight sums, and the scaled sums go to a row's f32x4 of running totals (block j in lane
    //! j mod 4), as [`super::dot_scalar`] does. With relaxed-simd, 16 products per
    //! `i32x4.relaxed_dot_i8x16_i7x16_add_s`; without it, the weights and activations widen to
    //! i16 as they load and `i32x4.dot_i16x8_s` multiplies and pairs them.
    use super::{Row, BIAS_SHIFT, BLOCK};
    use core::arch::wasm32::*;

    /// The i32x4 partial sums of one block: 32 weights at `wp` times 32 biased activations at
    /// `xp`.
    #[cfg(target_feature = "relaxed-simd")]
    #[inline(always)]
    unsafe fn block(wp: *const i8, xp: *const u8) -> v128 {
        let lo = i32x4_relaxed_dot_i8x16_i7x16_add(
            v128_load(wp as *const v128),
            v128_load(xp as *const v128),
            i32x4_splat(0),
        );
        i32x4_relaxed_dot_i8x16_i7x16_add(
            v128_load(wp.add(16) as *const v128),
            v128_load(xp.add(16) as *const v128),
            lo,
        )
    }

    #[cfg(not(target_feature = "relaxed-simd"))]
    #[inline(always)]
    unsafe fn block(wp: *const i8, xp: *const u8) -> v128 {
        let dot = |k: usize| {
            i32x4_dot_i16x8(
                i16x8_load_extend_i8x8(wp.add(k)),
                u16x8_load_extend_u8x8(xp.add(k)),
            )
        };
        i32x4_add(i32x4_add(dot(0), dot(8)), i32x4_add(dot(16), dot(24)))
    }

    /// Four blocks' partial sums to the four blocks' totals, in order.
    #[inline(always)]
    fn transpose_sum(p0: v128, p1: v128, p2: v128, p3: v128) -> v128 {
        // [p0₀+p0₂, p1₀+p1₂, p0₁+p0₃, p1₁+p1₃], likewise for p2, p3; then the sums.
        let q01 = i32x4_add(
            i32x4_shuffle::<0, 4, 1, 5>(p0, p1),
            i32x4_shuffle::<2, 6, 3, 7>(p0, p1),
        );
        let q23 = i32x4_add(
            i32x4_shuffle::<0, 4, 1, 5>(p2, p3),
            i32x4_shuffle::<2, 6, 3, 7>(p2, p3),
        );
        i32x4_add(
            i32x4_shuffle::<0, 1, 4, 5>(q01, q23),
            i32x4_shuffle::<2, 3, 6, 7>(q01, q23),
        )
    }

    pub(super) fn dot_rows(w: Row, x: &[u8], xs: &[f32], out: &mut [f32]) {
        let cols = w.qs.len();
        let nb = w.scales.len();
        let n = out.len();
        assert!(x.len() == n * cols && xs.len() == n * nb && n <= super::ROW_GROUP);
        let whole = nb - nb % 4;
        let mut acc = [f32x4_splat(0.0); super::ROW_GROUP];
        // SAFETY: every block index is below nb, so w.qs[j*32..+32·k], w.scales/sums[j..+k] and
        // x[r*cols + j*32..+32·k] (k = 4, or 1 past `whole`) are in bounds by the assert above;
        // v128 loads need no alignment.
        unsafe {
            for j in (0..whole).step_by(4) {
                let wp = w.qs.as_ptr().add(j * BLOCK);
                let wscale = v128_load(w.scales.as_ptr().add(j) as *const v128);
                let bias = i32x4_shl(
                    i32x4_load_extend_i16x4(w.sums.as_ptr().add(j)),
                    BIAS_SHIFT as u32,
                );
                for (r, a) in acc.iter_mut().enumerate().take(n) {
                    let xp = x.as_ptr().add(r * cols + j * BLOCK);
                    let sums = transpose_sum(
                        block(wp, xp),
                        block(wp.add(BLOCK), xp.add(BLOCK)),
                        block(wp.add(2 * BLOCK), xp.add(2 * BLOCK)),
                        block(wp.add(3 * BLOCK), xp.add(3 * BLOCK)),
                    );
                    let xscale = v128_load(xs.as_ptr().add(r * nb + j) as *const v128);
                    let t = f32x4_mul(
                        f32x4_convert_i32x4(i32x4_sub(sums, bias)),
                        f32x4_mul(wscale, xscale),
                    );
                    *a = f32x4_add(*a, t);
                }
            }
            for (r, (o, a)) in out.iter_mut().zip(acc).enumerate() {
                let mut t: [f32; 4] = core::mem::transmute(a);
                // The last blocks when there are not four: one at a time, to their lanes.
                for j in whole..nb {
                    t[j % 4] += w.block_term(j, &x[r * cols..][..cols], &xs[r * nb..][..nb]);
                }
                *o = (t[0] + t[1]) + (t[2] + t[3]);
            }
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod kernel {
    //! Native: on x86-64 with AVX2, per group of four blocks, `vpmaddubsw` + `vpmaddwd` (or one
    //! `vpdpbusd` with AVX-VNNI) give each block's eight partial sums of (x + 64)·w — exact:
    //! a pair is at most 2·127·127 < 2¹⁵ — and three `vphaddd` and a lane add make the four
    //! block sums, then as in the wasm kernel. Elsewhere, portable Rust. Both add as
    //! [`super::dot_scalar`] does.
    use super::Row;

    pub(super) fn portable(w: Row, x: &[u8], xs: &[f32], out: &mut [f32]) {
        let cols = w.qs.len();
        let nb = w.scales.len();
        let mut acc = [[0f32; 4]; super::ROW_GROUP];
        for j in 0..nb {
            for (r, a) in acc.iter_mut().enumerate().take(out.len()) {
                a[j % 4] += w.block_term(j, &x[r * cols..][..cols], &xs[r * nb..][..nb]);
            }
        }
        for (o, t) in out.iter_mut().zip(acc) {
            *o = (t[0] + t[1]) + (t[2] + t[3]);
        }
    }

    #[cfg(target_arch = "x86_64")]
    pub(super) mod x86 {
        use super::super::{Row, BIAS_SHIFT, BLOCK, ROW_GROUP};
        use std::arch::x86_64::*;

        /// One block's eight i32 partial sums: 32 biased activations at `xp` times 32 weights
        /// at `wp`.
        #[inline(always)]
        unsafe fn block<const VNNI: bool>(wp: *const i8, xp: *const u8) -> __m256i {
            let (w, x) = (
                _mm256_loadu_si256(wp as *const __m256i),
                _mm256_loadu_si256(xp as *const __m256i),
            );
            if VNNI {
                _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), x, w)
            } else {
                _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), _mm256_set1_epi16(1))
            }
        }

        #[inline(always)]
        unsafe fn body<const VNNI: bool>(w: Row, x: &[u8], xs: &[f32], out: &mut [f32]) {
            let cols = w.qs.len();
            let nb = w.scales.len();
            let n = out.len();
            assert!(x.len() == n * cols && xs.len() == n * nb && n <= ROW_GROUP);
            let whole = nb - nb % 4;
            let mut acc = [_mm_setzero_ps(); ROW_GROUP];
            for j in (0..whole).step_by(4) {
                let wp = w.qs.as_ptr().add(j * BLOCK);
                let wscale = _mm_loadu_ps(w.scales.as_ptr().add(j));
                let bias = _mm_slli_epi32::<{ BIAS_SHIFT }>(_mm_cvtepi16_epi32(_mm_loadl_epi64(
                    w.sums.as_ptr().add(j) as *const __m128i,
                )));
                for (r, a) in acc.iter_mut().enumerate().take(n) {
                    let xp = x.as_ptr().add(r * cols + j * BLOCK);
                    let p0 = block::<VNNI>(wp, xp);
                    let p1 = block::<VNNI>(wp.add(BLOCK), xp.add(BLOCK));
                    let p2 = block::<VNNI>(wp.add(2 * BLOCK), xp.add(2 * BLOCK));
                    let p3 = block::<VNNI>(wp.add(3 * BLOCK), xp.add(3 * BLOCK));
                    // Per 128-bit half: [Σp0, Σp1, Σp2, Σp3] of that half; then the halves.
                    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3));
                    let sums =
                        _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
                    let xscale = _mm_loadu_ps(xs.as_ptr().add(r * nb + j));
                    let t = _mm_mul_ps(
                        _mm_cvtepi32_ps(_mm_sub_epi32(sums, bias)),
                        _mm_mul_ps(wscale, xscale),
                    );
                    *a = _mm_add_ps(*a, t);
                }
            }
            for (r, (o, a)) in out.iter_mut().zip(acc).enumerate() {
                let mut t = [0f32; 4];
                _mm_storeu_ps(t.as_mut_ptr(), a);
                for j in whole..nb {
                    t[j % 4] += w.block_term(j, &x[r * cols..][..cols], &xs[r * nb..][..nb]);
                }
                *o = (t[0] + t[1]) + (t[2] + t[3]);
            }
        }

        #[target_feature(enable = "avx2")]
        pub(in crate::quant) unsafe fn avx2(w: Row, x: &[u8], xs: &[f32], out: &mut [f32]) {
            body::<false>(w, x, xs, out)
        }

        #[target_feature(enable = "avx2,avxvnni")]
        pub(in crate::quant) unsafe fn avx_vnni(w: Row, x: &[u8], xs: &[f32], out: &mut [f32]) {
            body::<true>(w, x, xs, out)
        }
    }

    pub(super) fn dot_rows(w: Row, x: &[u8], xs: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: each body runs only on a CPU with the features it was compiled for.
            if std::arch::is_x86_feature_detected!("avxvnni") {
                return unsafe { x86::avx_vnni(w, x, xs, out) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return unsafe { x86::avx2(w, x, xs, out) };
            }
        }
        portable(w, x, xs, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_names_round_trip() {
        for d in Dtype::ALL {
            assert_eq!(Dtype::parse(d.name()).unwrap(), d);
        }
        assert!(Dtype::parse("q3").is_err());
    }

    /// Every native kernel this CPU can run (not just the one `dot_rows` picks) equals the
    /// scalar reference bit for bit.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn every_native_kernel_equals_the_scalar_reference() {
        type Kernel = fn(Row, &[u8], &[f32], &mut [f32]);
        let mut kernels: Vec<(&str, Kernel)> = vec![("portable", kernel::portable)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: called only when the CPU has AVX2.
                kernels.push(("avx2", |w, x, xs, o| unsafe {
                    kernel::x86::avx2(w, x, xs, o)
                }));
            }
            if std::arch::is_x86_feature_detected!("avxvnni") {
                // SAFETY: called only when the CPU has AVX-VNNI.
                kernels.push(("avx-vnni", |w, x, xs, o| unsafe {
                    kernel::x86::avx_vnni(w, x, xs, o)
                }));
            }
        }
        let mut seed = 9u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
        };
        for blocks in [1, 4, 7, 8] {
            let cols = blocks * BLOCK;
            let w: Vec<f32> = (0..cols).map(|_| next()).collect();
            let m = Q8Matrix::quantize(&w, 1, cols).unwrap();
            let row = Row {
                qs: &m.qs,
                scales: &m.scales,
                sums: &m.sums,
            };
            for n in 1..=ROW_GROUP {
                let x: Vec<f32> = (0..n * cols).map(|_| next()).collect();
                let xq = QuantizedRows::new(&x, n, cols);
                let want: Vec<f32> = (0..n)
                    .map(|r| {
                        let (v, xs) = xq.parts();
                        dot_scalar(
                            &m.qs,
                            &m.scales,
                            &v[r * cols..(r + 1) * cols],
                            &xs[r * blocks..(r + 1) * blocks],
                        )
                    })
                    .collect();
                for (name, k) in &kernels {
                    let mut got = vec![0f32; n];
                    k(row, &xq.qs, &xq.scales, &mut got);
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{name}, {blocks} blocks, {n} rows");
                }
            }
        }
    }
}
