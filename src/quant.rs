//! Weights in ggml's q8_0 format (blocks of 32 signed bytes sharing one scale) and the matrix
//! product the model's linear layers run on them.
//!
//! Why our own kernel rather than candle's `QMatMul`: candle keeps each block's scale as f16 and
//! converts two of them per block inside its dot product (a software conversion in wasm), runs
//! one activation row at a time (a batch of B rows reads every weight B times), and in wasm runs
//! on one thread. Here scales are f32 in memory (rounded through f16 when quantized, as ggml
//! stores them, so a GGUF file round-trips exactly), weight rows are held interleaved in tiles
//! of four that the kernels multiply without horizontal sums (see [`Q8Matrix`]), activations
//! are quantized once per row, every weight block is loaded once for up to [`ROW_GROUP`]
//! activation rows, and the output rows split into independent ranges of whole tiles
//! ([`Q8Matrix::matmul_rows`]) a caller may spread over threads.
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

/// Activation rows that share one pass over a tile of weight rows: five, the widget's five
/// samples (one pass for all of them decoded 8% faster in the relaxed-simd build than passes of
/// four and one).
pub(crate) const ROW_GROUP: usize = 5;

/// Largest magnitude of ggml's 8-bit quantization: q8_0 weights, and the activations of the
/// 4-bit products ([`crate::q4`]).
pub(crate) const Q8_LEVELS: u8 = 127;

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
        *s = quantize_block::<L>(
            xb.try_into().expect("a block"),
            qb.try_into().expect("a block"),
        );
    }
}

/// One block: returns its scale and writes its values.
fn quantize_block<const L: u8>(xb: &[f32; BLOCK], qb: &mut [i8; BLOCK]) -> f32 {
    let (d, id) = scale_for(amax(xb), L);
    round_scaled(xb, id, qb);
    d
}

/// The scale of values whose largest magnitude is `amax`, quantized with `levels` each side of
/// zero, and its inverse, which the values are multiplied by (0 for an all-zero block).
pub(crate) fn scale_for(amax: f32, levels: u8) -> (f32, f32) {
    let d = amax / f32::from(levels);
    (d, if d != 0.0 { 1.0 / d } else { 0.0 })
}

/// The largest magnitude in a block (NaN is skipped, as `f32::max` skips it).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub(crate) fn amax(xb: &[f32; BLOCK]) -> f32 {
    xb.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// Writes `round(x · id)` for a block's values, rounded half away from zero (saturating; NaN
/// gives 0): the one rounding rule of q8_0 weights and of every quantized activation.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub(crate) fn round_scaled(xb: &[f32; BLOCK], id: f32, qb: &mut [i8; BLOCK]) {
    for (q, v) in qb.iter_mut().zip(xb) {
        *q = (v * id).round() as i8;
    }
}

/// [`amax`] with simd128.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) fn amax(xb: &[f32; BLOCK]) -> f32 {
    use core::arch::wasm32::*;
    // SAFETY: xb is 32 f32 (8 unaligned v128 loads).
    unsafe {
        let p = xb.as_ptr() as *const v128;
        // `pmax` from zero keeps the running maximum where a value is NaN, as the scalar
        // `f32::max` does (`f32x4_max` would make the lane NaN).
        let mut m = f32x4_splat(0.0);
        for i in 0..BLOCK / 4 {
            m = f32x4_pmax(m, f32x4_abs(v128_load(p.add(i))));
        }
        f32x4_extract_lane::<0>(m)
            .max(f32x4_extract_lane::<1>(m))
            .max(f32x4_extract_lane::<2>(m))
            .max(f32x4_extract_lane::<3>(m))
    }
}

/// [`round_scaled`] with simd128: the same numbers (round half away from zero as truncation
/// plus a step of ±1 where the fraction is at least ½; exact below 2²³), without a libm
/// `roundf` call per value — quantizing a 124M model at load is 124M of them.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) fn round_scaled(xb: &[f32; BLOCK], id: f32, qb: &mut [i8; BLOCK]) {
    use core::arch::wasm32::*;
    // SAFETY: xb is 32 f32 (8 unaligned v128 loads); qb is 32 bytes (2 v128 stores).
    unsafe {
        let p = xb.as_ptr() as *const v128;
        let id = f32x4_splat(id);
        let round = |x: v128| -> v128 {
            let t = f32x4_mul(x, id);
            let r = f32x4_trunc(t);
            let away = f32x4_ge(f32x4_abs(f32x4_sub(t, r)), f32x4_splat(0.5));
            let one = v128_or(f32x4_splat(1.0), v128_and(t, u32x4_splat(0x8000_0000)));
            i32x4_trunc_sat_f32x4(f32x4_add(r, v128_and(away, one)))
        };
        let q = qb.as_mut_ptr() as *mut v128;
        for half in 0..2 {
            let w: [v128; 4] = core::array::from_fn(|i| round(v128_load(p.add(half * 4 + i))));
            let lo = i16x8_narrow_i32x4(w[0], w[1]);
            let hi = i16x8_narrow_i32x4(w[2], w[3]);
            v128_store(q.add(half), i8x16_narrow_i16x8(lo, hi));
        }
    }
}

/// A weight matrix `[rows, cols]` (a linear layer's `[out, in]`) in q8_0, its rows held in
/// tiles of [`TILE`] for the kernels.
///
/// Per tile and block, the tile's rows' 32 values are eight 16-byte vectors; vector k holds values
/// 4k..4k+3 of the tile's first row, then of its second, third and fourth. One i8 dot product of
/// such a vector with four activations repeated four times gives four rows' partial sums at
/// once, lane r for row r, so a tile needs no horizontal sums: about a third fewer instructions
/// per weight byte than a row at a time (where four blocks' partial sums must be transposed and
/// added), which is what the q8_0 kernel in wasm is bound by. The blocks' scales and weight
/// sums sit four rows together the same way. Rows past `rows` in the last tile are zero.
#[derive(Clone)]
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    /// Tiles × cols/BLOCK blocks × 8 vectors × 16 values, as described above.
    qs: Vec<i8>,
    /// Tiles × cols/BLOCK blocks × TILE rows: scales, as f16 values held in f32.
    scales: Vec<f32>,
    /// Laid out as `scales`: the sums of each block's values, which take [`BIAS`] back off.
    sums: Vec<i16>,
}

/// Weight rows held interleaved; see [`Q8Matrix`].
pub const TILE: usize = 4;

/// Values of one row side by side in a tile's vector: what one i32 lane of an i8 dot product
/// adds up.
const RUN: usize = 4;

impl Q8Matrix {
    /// An all-zero `[rows, cols]` matrix; `cols` must be a multiple of [`BLOCK`].
    fn zeroed(rows: usize, cols: usize) -> Result<Self> {
        if !cols.is_multiple_of(BLOCK) {
            return Err(Error::Parameter(format!(
                "q8_0 needs rows of a multiple of {BLOCK} values; got [{rows}, {cols}]"
            )));
        }
        let held = rows.div_ceil(TILE) * TILE;
        Ok(Self {
            rows,
            cols,
            qs: vec![0; held * cols],
            scales: vec![0.0; held * cols / BLOCK],
            sums: vec![0; held * cols / BLOCK],
        })
    }

    /// Where run `k` (values `RUN·k..RUN·k + RUN`) of row `r` starts in `qs`.
    fn run_at(&self, r: usize, k: usize) -> usize {
        let (j, k) = (k * RUN / BLOCK, k % (BLOCK / RUN));
        (r / TILE * self.cols + j * BLOCK) * TILE + (k * TILE + r % TILE) * RUN
    }

    /// Where block `j` of row `r` has its scale and sum.
    fn block_at(&self, r: usize, j: usize) -> usize {
        (r / TILE * (self.cols / BLOCK) + j) * TILE + r % TILE
    }

    /// Sets row `r` to the quantized values `qs` with one scale per block.
    fn set_row(&mut self, r: usize, qs: &[i8], scales: &[f32]) {
        // Block j of the rows of r's tile is the tile's j-th BLOCK·TILE values ([`Self::run_at`]),
        // walked in order rather than placing each run from its index alone.
        let first = self.block_at(r, 0);
        let tile = &mut self.qs[r / TILE * self.cols * TILE..][..self.cols * TILE];
        for (j, (block, dst)) in qs
            .chunks_exact(BLOCK)
            .zip(tile.chunks_exact_mut(BLOCK * TILE))
            .enumerate()
        {
            for (k, run) in block.chunks_exact(RUN).enumerate() {
                let at = (k * TILE + r % TILE) * RUN;
                dst[at..at + RUN].copy_from_slice(run);
            }
            // Block j's scale and sum: the tile's j-th TILE of them ([`Self::block_at`]).
            let at = first + j * TILE;
            self.scales[at] = scales[j];
            self.sums[at] = block.iter().map(|&v| i16::from(v)).sum();
        }
    }

    /// Row `r`'s quantized values and per-block scales, in order.
    pub fn row(&self, r: usize) -> (Vec<i8>, Vec<f32>) {
        let qs = (0..self.cols / RUN)
            .flat_map(|k| &self.qs[self.run_at(r, k)..][..RUN])
            .copied()
            .collect();
        let scales = (0..self.cols / BLOCK)
            .map(|j| self.scales[self.block_at(r, j)])
            .collect();
        (qs, scales)
    }

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

    /// Builds a matrix from ggml's q8_0 blocks (an f16 scale, then 32 signed bytes; GGUF's
    /// tensor data), `rows × cols` row-major.
    pub fn from_ggml_bytes(rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        let mut m = Self::zeroed(rows, cols)?;
        let nb = cols / BLOCK;
        if bytes.len() != rows * nb * (2 + BLOCK) {
            return Err(Error::Parameter(format!(
                "q8_0 data of {} bytes does not fit a [{rows}, {cols}] matrix",
                bytes.len()
            )));
        }
        let (mut qs, mut scales) = (vec![0i8; cols], vec![0f32; nb]);
        for (r, row) in bytes.chunks_exact(nb * (2 + BLOCK)).enumerate() {
            for ((b, q), s) in row
                .chunks_exact(2 + BLOCK)
                .zip(qs.chunks_exact_mut(BLOCK))
                .zip(&mut scales)
            {
                *s = f16::from_le_bytes([b[0], b[1]]).to_f32();
                for (q, &v) in q.iter_mut().zip(&b[2..]) {
                    *q = v as i8;
                }
            }
            m.set_row(r, &qs, &scales);
        }
        Ok(m)
    }

    /// Rows `rows` of the matrix as ggml's q8_0 blocks ([`Self::from_ggml_bytes`] reads the
    /// whole matrix's back).
    pub fn ggml_rows(&self, rows: Range<usize>) -> Vec<u8> {
        let mut out = Vec::with_capacity(rows.len() * self.cols / BLOCK * (2 + BLOCK));
        for r in rows {
            let (qs, scales) = self.row(r);
            for (q, &s) in qs.chunks_exact(BLOCK).zip(&scales) {
                out.extend_from_slice(&f16::from_f32(s).to_le_bytes());
                out.extend(q.iter().map(|&v| v as u8));
            }
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

    /// Bytes held in memory.
    pub fn byte_size(&self) -> usize {
        self.qs.len() + 4 * self.scales.len() + 2 * self.sums.len()
    }

    /// Row `r` back as f32 (an embedding lookup in a tied embedding matrix).
    pub fn dequantize_row(&self, r: usize) -> Vec<f32> {
        let (qs, scales) = self.row(r);
        qs.chunks_exact(BLOCK)
            .zip(scales)
            .flat_map(|(q, s)| q.iter().map(move |&v| f32::from(v) * s))
            .collect()
    }

    /// `x · Wᵀ` for `x` of `m` rows of `cols` values: `m × rows` values, row-major.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_then(x, m, |_, v| v)
    }

    /// [`matmul`](Q8Matrix::matmul), each value `v` of output feature `o` becoming `then(o, v)`
    /// (a bias, an activation) as soon as its piece is computed, on the same thread.
    pub fn matmul_then<F>(&self, x: &[f32], m: usize, then: F) -> Vec<f32>
    where
        F: Fn(usize, f32) -> f32 + Sync + Send,
    {
        let xq = QuantizedRows::new(x, m, self.cols);
        crate::parallel::by_output_rows(self.rows, m, TILE, |range, out| {
            self.matmul_rows(&xq, range.clone(), out);
            crate::parallel::apply(range.start, out, &then);
        })
    }

    /// Output rows `range` (whole tiles: it starts at a multiple of [`TILE`] and ends at one or
    /// at `rows`) of `x · Wᵀ`: `out[i]` gets activation row i's values of those outputs (as
    /// many as it holds), so disjoint ranges can run on different threads.
    pub fn matmul_rows(&self, x: &QuantizedRows, range: Range<usize>, out: &mut [&mut [f32]]) {
        assert!(range.start.is_multiple_of(TILE) && range.end <= self.rows.div_ceil(TILE) * TILE);
        debug_assert_eq!(x.cols, self.cols);
        tiles_into(&Q8Pass { w: self, x }, x.m, range, out);
    }
}

/// One pass of a tiled product's kernel ([`tiles_into`]).
pub(crate) trait TilePass: Sync {
    /// Weight tile `tile` times the `N` activation rows from `first`: `[activation row][weight
    /// row]`.
    fn pass<const N: usize>(&self, tile: usize, first: usize) -> [[f32; TILE]; N];
}

/// Output rows `range` (whole tiles) of a tiled product with `m` activation rows: `out[i]`
/// gets activation row i's values of those outputs (as many as it holds, so the last tile's
/// rows past the matrix are dropped), each tile met by up to [`ROW_GROUP`] activation rows a
/// pass. Never inlined: one copy of each format's kernels in the page's WebAssembly.
#[inline(never)]
pub(crate) fn tiles_into<P: TilePass>(
    p: &P,
    m: usize,
    range: Range<usize>,
    out: &mut [&mut [f32]],
) {
    assert!(range.start.is_multiple_of(TILE) && out.len() == m);
    for (n, t) in (range.start / TILE..range.end.div_ceil(TILE)).enumerate() {
        for first in (0..m).step_by(ROW_GROUP) {
            let mut put = |got: &[[f32; TILE]]| {
                for (i, sums) in got.iter().enumerate() {
                    for (r, &v) in sums.iter().enumerate() {
                        if let Some(o) = out[first + i].get_mut(n * TILE + r) {
                            *o = v;
                        }
                    }
                }
            };
            // One arm per group size up to ROW_GROUP.
            const _: () = assert!(ROW_GROUP == 5);
            match (m - first).min(ROW_GROUP) {
                5 => put(&p.pass::<5>(t, first)),
                4 => put(&p.pass::<4>(t, first)),
                3 => put(&p.pass::<3>(t, first)),
                2 => put(&p.pass::<2>(t, first)),
                _ => put(&p.pass::<1>(t, first)),
            }
        }
    }
}

/// A q8_0 matrix and quantized activation rows, as [`tiles_into`] passes over them.
struct Q8Pass<'a> {
    w: &'a Q8Matrix,
    x: &'a QuantizedRows,
}

impl TilePass for Q8Pass<'_> {
    #[inline(always)]
    fn pass<const N: usize>(&self, t: usize, first: usize) -> [[f32; TILE]; N] {
        let (cols, nb) = (self.w.cols, self.w.cols / BLOCK);
        let w = Tile {
            qs: &self.w.qs[t * TILE * cols..][..TILE * cols],
            scales: &self.w.scales[t * TILE * nb..][..TILE * nb],
            sums: &self.w.sums[t * TILE * nb..][..TILE * nb],
        };
        let x = &self.x;
        kernel::dot_tile::<N>(
            w,
            std::array::from_fn(|i| &x.qs[(first + i) * cols..][..cols]),
            std::array::from_fn(|i| &x.scales[(first + i) * nb..][..nb]),
        )
    }
}

/// One tile of weight rows as the kernels take it (see [`Q8Matrix`]).
#[derive(Clone, Copy)]
struct Tile<'a> {
    qs: &'a [i8],
    scales: &'a [f32],
    sums: &'a [i16],
}

impl Tile<'_> {
    /// The blocks per row of a product of this tile with activation rows `x` (scales `xs`),
    /// once checked that every part has the length the tile's rows give it: what keeps the
    /// kernels' unchecked loads in bounds.
    fn blocks<const N: usize>(&self, x: &[&[u8]; N], xs: &[&[f32]; N]) -> usize {
        let cols = self.qs.len() / TILE;
        let nb = cols / BLOCK;
        assert!(self.qs.len() == TILE * nb * BLOCK);
        assert!(self.scales.len() == TILE * nb && self.sums.len() == TILE * nb);
        assert!(x.iter().all(|r| r.len() == cols) && xs.iter().all(|s| s.len() == nb));
        nb
    }
}

/// A [`Q8Matrix`] quantized as its rows arrive, first to last.
pub struct Q8Builder {
    matrix: Q8Matrix,
    done: usize,
    /// One row's values and scales on their way into the matrix.
    qs: Vec<i8>,
    scales: Vec<f32>,
}

impl Q8Builder {
    /// An empty `[rows, cols]` matrix; `cols` must be a multiple of [`BLOCK`].
    pub fn new(rows: usize, cols: usize) -> Result<Self> {
        Ok(Self {
            matrix: Q8Matrix::zeroed(rows, cols)?,
            done: 0,
            qs: vec![0; cols],
            scales: vec![0.0; cols / BLOCK],
        })
    }

    /// Rows quantized so far.
    pub fn rows_done(&self) -> usize {
        self.done
    }

    /// Quantizes the next rows: `values` holds whole rows, row-major, no more than remain.
    pub fn push(&mut self, values: &[f32]) {
        let cols = self.matrix.cols;
        let n = values.len() / cols;
        assert!(
            n * cols == values.len() && self.done + n <= self.matrix.rows,
            "whole rows"
        );
        for row in values.chunks_exact(cols) {
            quantize_blocks::<Q8_LEVELS>(row, &mut self.qs, &mut self.scales);
            // Scales are stored as ggml stores them: f16.
            for s in &mut self.scales {
                *s = f16::from_f32(*s).to_f32();
            }
            self.matrix.set_row(self.done, &self.qs, &self.scales);
            self.done += 1;
        }
    }

    /// The matrix, once every row is in.
    pub fn finish(self) -> Result<Q8Matrix> {
        if self.done != self.matrix.rows {
            return Err(Error::Parameter(format!(
                "{} of {} rows were quantized",
                self.done, self.matrix.rows
            )));
        }
        Ok(self.matrix)
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
/// [`BIAS`]; scales `xs`). Each block's exact integer sum times its two scales is added to one
/// running total, block after block: the order the kernels add in, so they equal this bit for
/// bit.
pub fn dot_scalar(w: &[i8], ws: &[f32], x: &[u8], xs: &[f32]) -> f32 {
    let mut total = 0f32;
    for ((wb, xb), (a, b)) in w
        .chunks_exact(BLOCK)
        .zip(x.chunks_exact(BLOCK))
        .zip(ws.iter().zip(xs))
    {
        let sum: i32 = wb
            .iter()
            .zip(xb)
            .map(|(&p, &q)| i32::from(p) * (i32::from(q) - i32::from(BIAS)))
            .sum();
        total += sum as f32 * (a * b);
    }
    total
}

/// `fused()` where the kernels spell their dot products fused, else `split()`
/// ([`crate::relaxed_dot`]; without relaxed-simd there is one spelling, `split()`'s).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
pub(crate) fn by_spelling<R>(fused: impl FnOnce() -> R, split: impl FnOnce() -> R) -> R {
    #[cfg(target_feature = "relaxed-simd")]
    if crate::relaxed_dot::spelling() == crate::relaxed_dot::Spelling::Fused {
        return fused();
    }
    let _ = fused;
    split()
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod kernel {
    //! wasm: per block, each of a tile's eight vectors (four values of four rows) is multiplied
    //! by the four activations it meets, repeated in every lane (`v128.load32_splat`), and
    //! added up per lane into the tile's four exact block sums of w·(x + 64). The bias comes off
    //! with the weight sums and the scaled sums go to each activation row's f32x4 of running
    //! totals, one lane per weight row, as [`super::dot_scalar`] adds. With relaxed-simd, 16
    //! products per relaxed dot product: `i32x4.relaxed_dot_i8x16_i7x16_add_s` where that is
    //! one instruction, else an `i16x8` relaxed dot (pairs of products, exact in i16: at most
    //! 2·127·127) and an `i32x4.dot_i16x8_s` by ones ([`crate::relaxed_dot`]). Without it,
    //! weights and activations widen to i16 as they load, `i32x4.dot_i16x8_s` multiplies and
    //! pairs them, and the pairs of two rows are added once per block.
    //!
    //! With several activation rows, a block's eight steps stay a loop, whose count LLVM is not
    //! shown ([`core::hint::black_box`]). LLVM unrolls a loop of a constant eight, reassociates
    //! the exact integer sums, and puts every operand of the block first: for five rows 48
    //! vectors, where V8 has 16 registers on x86, so most were stored to the stack and loaded
    //! back; and it fuses the split spelling's widening add back into the fused instruction.
    //! On a Zen 4 in Chromium, the loop and the split spelling together took a fifth off the
    //! relaxed-simd build's widget job (five rows a step), the loop with the fused spelling
    //! about 4%, and the plain build's job took the same either way. One row keeps the
    //! unrolled form: its operands fit, and it has no other rows to share a loop's overhead
    //! with.
    use super::{Tile, BIAS_SHIFT, BLOCK, RUN, TILE};
    use core::arch::wasm32::*;

    /// A tile's rows times `N` activation rows `x` (biased, scales `xs`): `[activation row][weight
    /// row]`.
    #[inline(always)]
    pub(super) fn dot_tile<const N: usize>(
        w: Tile,
        x: [&[u8]; N],
        xs: [&[f32]; N],
    ) -> [[f32; TILE]; N] {
        super::by_spelling(|| tile::<N, true>(w, x, xs), || tile::<N, false>(w, x, xs))
    }

    /// [`dot_tile`], its dot products fused or not (see [`crate::relaxed_dot`]; one spelling
    /// without relaxed-simd).
    #[inline(always)]
    fn tile<const N: usize, const FUSED: bool>(
        w: Tile,
        x: [&[u8]; N],
        xs: [&[f32]; N],
    ) -> [[f32; TILE]; N] {
        let nb = w.blocks(&x, &xs);
        let mut totals = [f32x4_splat(0.0); N];
        // BLOCK / RUN, kept from LLVM where several rows loop (see the module comment).
        let steps = if N == 1 {
            BLOCK / RUN
        } else {
            core::hint::black_box(BLOCK / RUN)
        };
        assert!(steps == BLOCK / RUN);
        // SAFETY: for every block j < nb, w.qs[j·128..+128], w.scales/sums[j·4..+4], x[i][j·32
        // ..+32] and xs[i][j] are in bounds by `Tile::blocks`'s checks (and `steps` is BLOCK /
        // RUN); v128 loads need no alignment.
        unsafe {
            for j in 0..nb {
                let wp = w.qs.as_ptr().add(j * TILE * BLOCK);
                let xp = std::array::from_fn(|i| x[i].as_ptr().add(j * BLOCK));
                let sums = if N == 1 {
                    block_sums::<N, FUSED>(wp, xp)
                } else {
                    block_sums_looped::<N, FUSED>(wp, xp, steps)
                };
                let wscale = v128_load(w.scales.as_ptr().add(j * TILE) as *const v128);
                let bias = i32x4_shl(
                    i32x4_load_extend_i16x4(w.sums.as_ptr().add(j * TILE)),
                    BIAS_SHIFT as u32,
                );
                for i in 0..N {
                    let xscale = v128_load32_splat(xs[i].as_ptr().add(j) as *const u32);
                    let t = f32x4_mul(
                        f32x4_convert_i32x4(i32x4_sub(sums[i], bias)),
                        f32x4_mul(wscale, xscale),
                    );
                    totals[i] = f32x4_add(totals[i], t);
                }
            }
            totals.map(|t| core::mem::transmute(t))
        }
    }

    /// One block of a tile (at `wp`) times `N` activation rows' blocks (at `xp`): per activation
    /// row, the four weight rows' exact sums of w·(x + 64).
    #[cfg(target_feature = "relaxed-simd")]
    #[inline(always)]
    unsafe fn block_sums<const N: usize, const FUSED: bool>(
        wp: *const i8,
        xp: [*const u8; N],
    ) -> [v128; N] {
        // One activation row: two chains of sums, so that each waits on the other less.
        let mut acc = [[i32x4_splat(0); 2]; N];
        for k in 0..BLOCK / RUN {
            let wv = v128_load(wp.add(k * TILE * RUN) as *const v128);
            for i in 0..N {
                let c = if N == 1 { k % 2 } else { 0 };
                let xv = v128_load32_splat(xp[i].add(k * RUN) as *const u32);
                acc[i][c] = dot_add::<FUSED>(acc[i][c], wv, xv);
            }
        }
        acc.map(|[a, b]| i32x4_add(a, b))
    }

    /// [`block_sums`] for several activation rows, as a loop of `steps` (see the module
    /// comment).
    #[cfg(target_feature = "relaxed-simd")]
    #[inline(always)]
    unsafe fn block_sums_looped<const N: usize, const FUSED: bool>(
        wp: *const i8,
        xp: [*const u8; N],
        steps: usize,
    ) -> [v128; N] {
        let mut acc = [i32x4_splat(0); N];
        for k in 0..steps {
            let wv = v128_load(wp.add(k * TILE * RUN) as *const v128);
            for i in 0..N {
                let xv = v128_load32_splat(xp[i].add(k * RUN) as *const u32);
                acc[i] = dot_add::<FUSED>(acc[i], wv, xv);
            }
        }
        acc
    }

    /// `acc` plus, per lane, the sum of the four products of the lane's bytes of `w` (i8) and
    /// `x` (7-bit), spelled as `FUSED` says ([`crate::relaxed_dot`]).
    #[cfg(target_feature = "relaxed-simd")]
    #[inline(always)]
    fn dot_add<const FUSED: bool>(acc: v128, w: v128, x: v128) -> v128 {
        if FUSED {
            i32x4_relaxed_dot_i8x16_i7x16_add(w, x, acc)
        } else {
            // The ones are one constant for the whole kernel (a wasm local), not made at each use.
            let pairs = i16x8_relaxed_dot_i8x16_i7x16(w, x);
            i32x4_add(acc, i32x4_dot_i16x8(pairs, i16x8_splat(1)))
        }
    }

    #[cfg(not(target_feature = "relaxed-simd"))]
    #[inline(always)]
    unsafe fn block_sums<const N: usize, const FUSED: bool>(
        wp: *const i8,
        xp: [*const u8; N],
    ) -> [v128; N] {
        block_sums_looped::<N, FUSED>(wp, xp, BLOCK / RUN)
    }

    /// [`block_sums`], as a loop of `steps` for several rows (see the module comment).
    #[cfg(not(target_feature = "relaxed-simd"))]
    #[inline(always)]
    unsafe fn block_sums_looped<const N: usize, const FUSED: bool>(
        wp: *const i8,
        xp: [*const u8; N],
        steps: usize,
    ) -> [v128; N] {
        // Per activation row, rows 0–1's and rows 2–3's pairs of products.
        let mut acc = [[i32x4_splat(0); 2]; N];
        for k in 0..steps {
            let w01 = i16x8_load_extend_i8x8(wp.add(k * TILE * RUN));
            let w23 = i16x8_load_extend_i8x8(wp.add(k * TILE * RUN + 2 * RUN));
            for i in 0..N {
                let xv =
                    u16x8_extend_low_u8x16(v128_load32_splat(xp[i].add(k * RUN) as *const u32));
                acc[i][0] = i32x4_add(acc[i][0], i32x4_dot_i16x8(w01, xv));
                acc[i][1] = i32x4_add(acc[i][1], i32x4_dot_i16x8(w23, xv));
            }
        }
        acc.map(|[a, b]| {
            i32x4_add(
                i32x4_shuffle::<0, 2, 4, 6>(a, b),
                i32x4_shuffle::<1, 3, 5, 7>(a, b),
            )
        })
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod kernel {
    //! Native: on x86-64 with AVX2, per block, each 32-byte load of a tile (eight values of
    //! four rows) meets its eight activations laid out four by four (one `vpermd` of the
    //! block's activations); `vpmaddubsw` + `vpmaddwd` (or one `vpdpbusd` with AVX-VNNI) give
    //! eight partial sums of (x + 64)·w — exact: a pair is at most 2·127·127 < 2¹⁵ — and the two
    //! 128-bit halves added are the four rows' block sums; then as in the wasm kernel.
    //! Elsewhere, portable Rust. Both add as [`super::dot_scalar`] does.
    use super::{Tile, BIAS, BLOCK, RUN, TILE};

    /// A tile's rows times `N` activation rows, one value at a time.
    pub(super) fn portable<const N: usize>(
        w: Tile,
        x: [&[u8]; N],
        xs: [&[f32]; N],
    ) -> [[f32; TILE]; N] {
        let nb = xs[0].len();
        let mut totals = [[0f32; TILE]; N];
        for j in 0..nb {
            for (i, t) in totals.iter_mut().enumerate() {
                for (r, t) in t.iter_mut().enumerate() {
                    let mut sum = 0i32;
                    for k in 0..BLOCK / RUN {
                        for v in 0..RUN {
                            let wv = w.qs[(j * BLOCK / RUN + k) * TILE * RUN + r * RUN + v];
                            sum += i32::from(wv) * i32::from(x[i][j * BLOCK + k * RUN + v]);
                        }
                    }
                    let at = j * TILE + r;
                    let sum = sum - i32::from(w.sums[at]) * i32::from(BIAS);
                    *t += sum as f32 * (w.scales[at] * xs[i][j]);
                }
            }
        }
        totals
    }

    #[cfg(target_arch = "x86_64")]
    pub(super) mod x86 {
        use super::super::{Tile, BIAS_SHIFT, BLOCK, RUN, TILE};
        use std::arch::x86_64::*;

        // Block j indexes four slices at different strides.
        #[allow(clippy::needless_range_loop)]
        #[inline(always)]
        unsafe fn body<const VNNI: bool, const N: usize>(
            w: Tile,
            x: [&[u8]; N],
            xs: [&[f32]; N],
        ) -> [[f32; TILE]; N] {
            // Every load below is in bounds by `Tile::blocks`'s checks, as in the wasm kernel.
            let nb = w.blocks(&x, &xs);
            // Activations 2h, 2h + 1 (four bytes each) repeated over the halves of vector h.
            let spread: [__m256i; 4] = std::array::from_fn(|h| {
                let (a, b) = (2 * h as i32, 2 * h as i32 + 1);
                _mm256_setr_epi32(a, a, a, a, b, b, b, b)
            });
            let ones = _mm256_set1_epi16(1);
            let mut totals = [_mm_setzero_ps(); N];
            for j in 0..nb {
                let wp = w.qs.as_ptr().add(j * TILE * BLOCK);
                let xv: [__m256i; N] = std::array::from_fn(|i| {
                    _mm256_loadu_si256(x[i].as_ptr().add(j * BLOCK) as *const __m256i)
                });
                let mut acc = [_mm256_setzero_si256(); N];
                for (h, s) in spread.iter().enumerate() {
                    let wv = _mm256_loadu_si256(wp.add(h * 2 * TILE * RUN) as *const __m256i);
                    for i in 0..N {
                        let xh = _mm256_permutevar8x32_epi32(xv[i], *s);
                        acc[i] = if VNNI {
                            _mm256_dpbusd_avx_epi32(acc[i], xh, wv)
                        } else {
                            _mm256_add_epi32(
                                acc[i],
                                _mm256_madd_epi16(_mm256_maddubs_epi16(xh, wv), ones),
                            )
                        };
                    }
                }
                let wscale = _mm_loadu_ps(w.scales.as_ptr().add(j * TILE));
                let bias = _mm_slli_epi32::<{ BIAS_SHIFT }>(_mm_cvtepi16_epi32(_mm_loadl_epi64(
                    w.sums.as_ptr().add(j * TILE) as *const __m128i,
                )));
                for i in 0..N {
                    let sums = _mm_add_epi32(
                        _mm256_castsi256_si128(acc[i]),
                        _mm256_extracti128_si256::<1>(acc[i]),
                    );
                    let xscale = _mm_set1_ps(xs[i][j]);
                    let t = _mm_mul_ps(
                        _mm_cvtepi32_ps(_mm_sub_epi32(sums, bias)),
                        _mm_mul_ps(wscale, xscale),
                    );
                    totals[i] = _mm_add_ps(totals[i], t);
                }
            }
            totals.map(|t| {
                let mut out = [0f32; TILE];
                _mm_storeu_ps(out.as_mut_ptr(), t);
                out
            })
        }

        #[target_feature(enable = "avx2")]
        pub(in crate::quant) unsafe fn avx2<const N: usize>(
            w: Tile,
            x: [&[u8]; N],
            xs: [&[f32]; N],
        ) -> [[f32; TILE]; N] {
            body::<false, N>(w, x, xs)
        }

        #[target_feature(enable = "avx2,avxvnni")]
        pub(in crate::quant) unsafe fn avx_vnni<const N: usize>(
            w: Tile,
            x: [&[u8]; N],
            xs: [&[f32]; N],
        ) -> [[f32; TILE]; N] {
            body::<true, N>(w, x, xs)
        }
    }

    /// A tile's rows times `N` activation rows with the best kernel this CPU runs.
    pub(super) fn dot_tile<const N: usize>(
        w: Tile,
        x: [&[u8]; N],
        xs: [&[f32]; N],
    ) -> [[f32; TILE]; N] {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: each body runs only on a CPU with the features it was compiled for.
            if std::arch::is_x86_feature_detected!("avxvnni") {
                return unsafe { x86::avx_vnni(w, x, xs) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return unsafe { x86::avx2(w, x, xs) };
            }
        }
        portable(w, x, xs)
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

    /// Every native kernel this CPU can run (not just the one `dot_tile` picks) equals the
    /// scalar reference bit for bit, for each number of activation rows it takes at once.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn every_native_kernel_equals_the_scalar_reference() {
        check_kernels::<1>();
        check_kernels::<2>();
        check_kernels::<3>();
        check_kernels::<4>();
        check_kernels::<5>();
    }

    #[cfg(not(target_arch = "wasm32"))]
    type Kernel<const N: usize> =
        for<'a> fn(Tile<'a>, [&'a [u8]; N], [&'a [f32]; N]) -> [[f32; TILE]; N];

    #[cfg(not(target_arch = "wasm32"))]
    fn check_kernels<const N: usize>() {
        let mut kernels: Vec<(&str, Kernel<N>)> = vec![("portable", kernel::portable::<N>)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: called only when the CPU has AVX2.
                kernels.push(("avx2", |w, x, xs| unsafe { kernel::x86::avx2(w, x, xs) }));
            }
            if std::arch::is_x86_feature_detected!("avxvnni") {
                // SAFETY: called only when the CPU has AVX-VNNI.
                kernels.push(("avx-vnni", |w, x, xs| unsafe {
                    kernel::x86::avx_vnni(w, x, xs)
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
            // Two tiles, the second with one row and three of padding.
            let rows = TILE + 1;
            let w: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
            let m = Q8Matrix::quantize(&w, rows, cols).unwrap();
            let x: Vec<f32> = (0..N * cols).map(|_| next()).collect();
            let xq = QuantizedRows::new(&x, N, cols);
            let (v, xs) = xq.parts();
            let xr = |i: usize| &v[i * cols..(i + 1) * cols];
            let sr = |i: usize| &xs[i * blocks..(i + 1) * blocks];
            for t in 0..2 {
                let nb = blocks;
                let tile = Tile {
                    qs: &m.qs[t * TILE * cols..][..TILE * cols],
                    scales: &m.scales[t * TILE * nb..][..TILE * nb],
                    sums: &m.sums[t * TILE * nb..][..TILE * nb],
                };
                let want: [[f32; TILE]; N] = std::array::from_fn(|i| {
                    std::array::from_fn(|r| match t * TILE + r {
                        o if o < rows => {
                            let (wq, ws) = m.row(o);
                            dot_scalar(&wq, &ws, xr(i), sr(i))
                        }
                        _ => 0.0,
                    })
                });
                for (name, k) in &kernels {
                    let got = k(tile, std::array::from_fn(xr), std::array::from_fn(sr));
                    let bits = |v: &[[f32; TILE]; N]| v.map(|r| r.map(f32::to_bits));
                    assert_eq!(bits(&got), bits(&want), "{name}, {blocks} blocks, {N} rows");
                }
            }
        }
    }
}
