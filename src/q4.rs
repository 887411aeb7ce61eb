//! Weights in ggml's 4-bit formats, as a `botcard convert --dtype q4k|q4_0` GGUF stores them,
//! and the matrix products the model's linear layers run on them: q4_K (super-blocks of 256
//! values in eight sub-blocks of 32, each sub-block with a 6-bit scale and a 6-bit minimum) and
//! q4_0 (blocks of 32 values sharing one f16 scale, zero at 8).
//!
//! Why our own kernels rather than candle's `vec_dot_q4k_q8k`/`vec_dot_q4_0_q8_0`: candle's
//! simd128 q4_K kernel widens every eight values to i32 and multiplies them there, one weight
//! row and one activation row at a time; in the tab a 124M decoded at 18.8 tok/s on one
//! thread, against 172.7 natively and 92.5 for q8_0 in the tab. Here, as for q8_0
//! ([`crate::quant`]), weight rows are held interleaved in tiles of four ([`Q4KMatrix`]), so
//! that one integer dot product gives four rows' partial sums and no horizontal sums are
//! needed, activations are quantized once per product, and every weight is loaded once for up
//! to five activation rows ([`crate::quant::tiles_into`]). Both formats are runs of 32 four-bit
//! values of four rows, which one kernel ([`SUB_BYTES`] per run of a tile) multiplies; they
//! differ in the float steps around it. The nibbles are the small operand of the integer dot
//! products (0..=15: exact in wasm's relaxed `i32x4.relaxed_dot_i8x16_i7x16`, whose second
//! operand must be below 128, and in x86's unsigned × signed `pmaddubsw`).
//!
//! The arithmetic is ggml's but for the activations' scales: 8-bit activations with one f32
//! scale amax / 127 per 256 values for q4_K (where ggml's q8_K takes −127 / the signed maximum
//! and rounds half to even) and per 32 for q4_0 (ggml's q8_0, but the scale not rounded to
//! f16), rounded as q8_0 rounds ([`crate::quant::round_scaled`]); and with one order of the
//! float steps, [`dot_q4k`]'s and [`dot_q4_0`]'s, that every kernel keeps: the CLI, the plain
//! simd128 build and the relaxed-simd build write the same text.

use std::ops::Range;

use half::f16;

use crate::error::{Error, Result};
use crate::quant::{amax, round_scaled, scale_for, tiles_into, TilePass, BLOCK, Q8_LEVELS, TILE};

/// Values per q4_K super-block.
pub const QK_K: usize = 256;

/// Values per q4_K sub-block (one scale and one minimum) and per q4_0 block: what one pass of
/// the kernel multiplies, and one block of activations' rounding.
const SUB: usize = BLOCK;

/// Sub-blocks per super-block.
const SUBS: usize = QK_K / SUB;

/// Bytes of one q4_K super-block in a GGUF file: f16 d, f16 dmin, 12 bytes of packed 6-bit
/// scales and minima, 128 bytes of nibbles.
pub const BLOCK_BYTES: usize = 4 + 12 + QK_K / 2;

/// Bytes of one q4_0 block in a GGUF file: f16 d, 16 bytes of nibbles.
pub const Q4_0_BYTES: usize = 2 + SUB / 2;

/// Bytes of a run of 32 values of a tile's four rows, two values a byte.
pub const SUB_BYTES: usize = SUB * TILE / 2;

/// Writes 32 four-bit values `q` of lane (row) `lane` into a tile's run `run`: byte 4·lane + u
/// of vector v holds value 8v + u in its low nibble and 8v + 4 + u in its high one.
fn pack_run(q: &[u8], lane: usize, run: &mut [u8]) {
    for v in 0..4 {
        for u in 0..4 {
            run[16 * v + 4 * lane + u] = q[8 * v + u] | (q[8 * v + 4 + u] << 4);
        }
    }
}

/// Reads lane `lane`'s 32 values of a tile's run back ([`pack_run`] read backwards).
fn unpack_run(run: &[u8], lane: usize, q: &mut [u8]) {
    for v in 0..4 {
        for u in 0..4 {
            let byte = run[16 * v + 4 * lane + u];
            q[8 * v + u] = byte & 0xF;
            q[8 * v + 4 + u] = byte >> 4;
        }
    }
}

/// One super-block as the format means it: `value = d·scale[s]·q − dmin·min[s]` for value `q`
/// of sub-block `s`.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub d: f32,
    pub dmin: f32,
    pub scales: [u8; SUBS],
    pub mins: [u8; SUBS],
    /// The 256 four-bit values, in order.
    pub q: [u8; QK_K],
}

impl Block {
    /// Reads one super-block of a GGUF file (ggml's `block_q4_K`).
    pub fn from_ggml(bytes: &[u8; BLOCK_BYTES]) -> Self {
        let half = |i: usize| f16::from_le_bytes([bytes[i], bytes[i + 1]]).to_f32();
        let packed = &bytes[4..16];
        let (mut scales, mut mins) = ([0u8; SUBS], [0u8; SUBS]);
        for j in 0..SUBS {
            // ggml's get_scale_min_k4: sub-blocks 0–3 in the low 6 bits of bytes 0–7, 4–7 in
            // the nibbles of bytes 8–11 with their top two bits in the top bits of bytes 0–7.
            (scales[j], mins[j]) = if j < 4 {
                (packed[j] & 63, packed[j + 4] & 63)
            } else {
                (
                    (packed[j + 4] & 0xF) | ((packed[j - 4] >> 6) << 4),
                    (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4),
                )
            };
        }
        let mut q = [0u8; QK_K];
        // Each 32 bytes hold 64 values: the first 32 in the low nibbles, the next in the high.
        for (chunk, bytes) in bytes[16..].chunks_exact(32).enumerate() {
            for (l, &b) in bytes.iter().enumerate() {
                q[64 * chunk + l] = b & 0xF;
                q[64 * chunk + 32 + l] = b >> 4;
            }
        }
        Self {
            d: half(0),
            dmin: half(2),
            scales,
            mins,
            q,
        }
    }

    /// The super-block as a GGUF file stores it: [`Block::from_ggml`] read backwards.
    pub fn to_ggml(&self) -> [u8; BLOCK_BYTES] {
        let mut out = [0u8; BLOCK_BYTES];
        out[0..2].copy_from_slice(&f16::from_f32(self.d).to_le_bytes());
        out[2..4].copy_from_slice(&f16::from_f32(self.dmin).to_le_bytes());
        let (sc, mn) = (&self.scales, &self.mins);
        for j in 0..4 {
            out[4 + j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
            out[8 + j] = (mn[j] & 63) | ((mn[j + 4] >> 4) << 6);
            out[12 + j] = (sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4);
        }
        for chunk in 0..QK_K / 64 {
            for l in 0..32 {
                out[16 + 32 * chunk + l] =
                    self.q[64 * chunk + l] | (self.q[64 * chunk + 32 + l] << 4);
            }
        }
        out
    }

    /// The 256 values as f32, as ggml's `dequantize_row_q4_K` computes them.
    pub fn dequantize(&self, out: &mut [f32]) {
        for (s, (o, q)) in out
            .chunks_exact_mut(SUB)
            .zip(self.q.chunks_exact(SUB))
            .enumerate()
        {
            let (d, m) = (
                self.d * f32::from(self.scales[s]),
                self.dmin * f32::from(self.mins[s]),
            );
            for (o, &q) in o.iter_mut().zip(q) {
                *o = d * f32::from(q) - m;
            }
        }
    }
}

/// The reference: one weight row's super-blocks `w` against one activation row (`x`, its
/// super-blocks' scales `xd`). Per super-block, the exact integer sums Σ scale·Σq·x and
/// Σ min·Σx become one float step, `(d·xd)·sumi − (dmin·xd)·summ`, added to one running total:
/// the order the kernels add in, so they equal this bit for bit.
pub fn dot_q4k(w: &[Block], x: &[i8], xd: &[f32]) -> f32 {
    let mut total = 0f32;
    for ((b, xb), &dx) in w.iter().zip(x.chunks_exact(QK_K)).zip(xd) {
        let (mut sumi, mut summ) = (0i32, 0i32);
        for s in 0..SUBS {
            let (q, xs) = (&b.q[s * SUB..][..SUB], &xb[s * SUB..][..SUB]);
            let dot: i32 = q
                .iter()
                .zip(xs)
                .map(|(&q, &x)| i32::from(q) * i32::from(x))
                .sum();
            let sum: i32 = xs.iter().map(|&x| i32::from(x)).sum();
            sumi += i32::from(b.scales[s]) * dot;
            summ += i32::from(b.mins[s]) * sum;
        }
        total += (b.d * dx) * sumi as f32 - (b.dmin * dx) * summ as f32;
    }
    total
}

/// A weight matrix `[rows, cols]` (a linear layer's `[out, in]`) in q4_K, its rows held in
/// tiles of [`TILE`] for the kernels.
///
/// Per tile, super-block and sub-block, the four rows' 32 values are four 16-byte vectors;
/// byte 4r + u of vector v holds row r's value 8v + u in its low nibble and 8v + 4 + u in its
/// high one. Masked or shifted, a vector is four values of four rows, lane r for row r, which
/// one i8 dot product with four activations repeated four times turns into the four rows'
/// partial sums. Scales and minima sit four rows together per sub-block, `d` and `dmin` four
/// rows together per super-block. Rows past `rows` in the last tile are zero.
#[derive(Clone)]
pub struct Q4KMatrix {
    rows: usize,
    cols: usize,
    /// Tiles × super-blocks × sub-blocks × [`SUB_BYTES`], as described above.
    qs: Vec<u8>,
    /// Tiles × super-blocks × sub-blocks × TILE rows.
    scales: Vec<u8>,
    /// Laid out as `scales`.
    mins: Vec<u8>,
    /// Tiles × super-blocks × TILE rows.
    d: Vec<f32>,
    /// Laid out as `d`.
    dmin: Vec<f32>,
}

impl Q4KMatrix {
    /// The matrix stored in `bytes` as GGUF stores a q4_K tensor of `rows` rows of `cols`
    /// values (a multiple of [`QK_K`]).
    pub fn from_ggml_bytes(rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        let nb = cols / QK_K;
        if cols == 0 || !cols.is_multiple_of(QK_K) || bytes.len() != rows * nb * BLOCK_BYTES {
            return Err(Error::Parameter(format!(
                "q4_K data of {} bytes does not fit a [{rows}, {cols}] matrix",
                bytes.len()
            )));
        }
        let tiles = rows.div_ceil(TILE);
        let mut m = Self {
            rows,
            cols,
            qs: vec![0; tiles * cols * TILE / 2],
            scales: vec![0; tiles * nb * SUBS * TILE],
            mins: vec![0; tiles * nb * SUBS * TILE],
            d: vec![0.0; tiles * nb * TILE],
            dmin: vec![0.0; tiles * nb * TILE],
        };
        for (r, row) in bytes.chunks_exact(nb * BLOCK_BYTES).enumerate() {
            for (b, block) in row.chunks_exact(BLOCK_BYTES).enumerate() {
                m.set_block(r, b, &Block::from_ggml(block.try_into().expect("a block")));
            }
        }
        Ok(m)
    }

    fn blocks_per_row(&self) -> usize {
        self.cols / QK_K
    }

    /// Where super-block `b` of row `r`'s tile starts, counted in super-blocks of a tile.
    fn tile_block(&self, r: usize, b: usize) -> usize {
        r / TILE * self.blocks_per_row() + b
    }

    fn set_block(&mut self, r: usize, b: usize, block: &Block) {
        let (tb, lane) = (self.tile_block(r, b), r % TILE);
        self.d[tb * TILE + lane] = block.d;
        self.dmin[tb * TILE + lane] = block.dmin;
        for s in 0..SUBS {
            let at = (tb * SUBS + s) * TILE + lane;
            self.scales[at] = block.scales[s];
            self.mins[at] = block.mins[s];
            let run = &mut self.qs[(tb * SUBS + s) * SUB_BYTES..][..SUB_BYTES];
            pack_run(&block.q[s * SUB..][..SUB], lane, run);
        }
    }

    /// Super-block `b` of row `r`.
    pub fn block(&self, r: usize, b: usize) -> Block {
        assert!(r < self.rows, "row {r} of {}", self.rows);
        let (tb, lane) = (self.tile_block(r, b), r % TILE);
        let mut block = Block {
            d: self.d[tb * TILE + lane],
            dmin: self.dmin[tb * TILE + lane],
            scales: [0; SUBS],
            mins: [0; SUBS],
            q: [0; QK_K],
        };
        for s in 0..SUBS {
            let at = (tb * SUBS + s) * TILE + lane;
            block.scales[s] = self.scales[at];
            block.mins[s] = self.mins[at];
            let run = &self.qs[(tb * SUBS + s) * SUB_BYTES..][..SUB_BYTES];
            unpack_run(run, lane, &mut block.q[s * SUB..][..SUB]);
        }
        block
    }

    /// Row `r`'s super-blocks, in order.
    pub fn row(&self, r: usize) -> Vec<Block> {
        (0..self.blocks_per_row())
            .map(|b| self.block(r, b))
            .collect()
    }

    /// The super-blocks of rows `rows`, as GGUF stores them.
    pub fn ggml_rows(&self, rows: Range<usize>) -> Vec<u8> {
        let mut out = Vec::with_capacity(rows.len() * self.blocks_per_row() * BLOCK_BYTES);
        for r in rows {
            for b in 0..self.blocks_per_row() {
                out.extend_from_slice(&self.block(r, b).to_ggml());
            }
        }
        out
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held.
    pub fn byte_size(&self) -> usize {
        self.qs.len() + self.scales.len() + self.mins.len() + 4 * (self.d.len() + self.dmin.len())
    }

    /// Row `r` as f32 (an embedding lookup in a tied embedding matrix).
    pub fn dequantize_row(&self, r: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.cols];
        for (b, o) in out.chunks_exact_mut(QK_K).enumerate() {
            self.block(r, b).dequantize(o);
        }
        out
    }

    /// `x · Wᵀ` for `x` of `m` rows of `cols` values: `m × rows` values, row-major, each value
    /// `v` of output feature `o` becoming `then(o, v)` as soon as its piece is computed.
    pub fn matmul_then<F>(&self, x: &[f32], m: usize, then: F) -> Vec<f32>
    where
        F: Fn(usize, f32) -> f32 + Sync + Send,
    {
        matmul_then(self, x, m, then)
    }
}

impl Tiles for Q4KMatrix {
    type Tile<'a> = Q4KTile<'a>;
    const PER: usize = QK_K;

    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn tile(&self, t: usize) -> Q4KTile<'_> {
        let (cols, nb) = (self.cols, self.blocks_per_row());
        Q4KTile {
            qs: &self.qs[t * cols * TILE / 2..][..cols * TILE / 2],
            scales: &self.scales[t * nb * SUBS * TILE..][..nb * SUBS * TILE],
            mins: &self.mins[t * nb * SUBS * TILE..][..nb * SUBS * TILE],
            d: &self.d[t * nb * TILE..][..nb * TILE],
            dmin: &self.dmin[t * nb * TILE..][..nb * TILE],
        }
    }

    fn dot_tile<const N: usize>(w: Q4KTile<'_>, x: [Row; N]) -> [[f32; TILE]; N] {
        kernel::dot_q4k_tile(w, x)
    }
}

/// One q4_0 block as the format means it: `value = d·(q − 8)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Block0 {
    pub d: f32,
    /// The 32 four-bit values, in order.
    pub q: [u8; SUB],
}

impl Block0 {
    /// Reads one block of a GGUF file (ggml's `block_q4_0`: the first 16 values in the low
    /// nibbles, the next 16 in the high ones).
    pub fn from_ggml(bytes: &[u8; Q4_0_BYTES]) -> Self {
        let mut q = [0u8; SUB];
        for (j, &b) in bytes[2..].iter().enumerate() {
            q[j] = b & 0xF;
            q[j + SUB / 2] = b >> 4;
        }
        Self {
            d: f16::from_le_bytes([bytes[0], bytes[1]]).to_f32(),
            q,
        }
    }

    /// The block as a GGUF file stores it.
    pub fn to_ggml(&self) -> [u8; Q4_0_BYTES] {
        let mut out = [0u8; Q4_0_BYTES];
        out[0..2].copy_from_slice(&f16::from_f32(self.d).to_le_bytes());
        for j in 0..SUB / 2 {
            out[2 + j] = self.q[j] | (self.q[j + SUB / 2] << 4);
        }
        out
    }
}

/// The q4_0 reference: one weight row's blocks `w` against one activation row (`x`, its
/// blocks' scales `xd`): per block, `(d·xd)·(Σq·x − 8·Σx)` added to one running total, the
/// order the kernels add in.
pub fn dot_q4_0(w: &[Block0], x: &[i8], xd: &[f32]) -> f32 {
    let mut total = 0f32;
    for ((b, xb), &dx) in w.iter().zip(x.chunks_exact(SUB)).zip(xd) {
        let dot: i32 =
            b.q.iter()
                .zip(xb)
                .map(|(&q, &x)| i32::from(q) * i32::from(x))
                .sum();
        let sum: i32 = xb.iter().map(|&x| i32::from(x)).sum();
        total += (b.d * dx) * (dot - 8 * sum) as f32;
    }
    total
}

/// A weight matrix `[rows, cols]` in q4_0, its rows held in tiles of [`TILE`]: each block of a
/// tile's four rows is one run of [`SUB_BYTES`] laid out as a q4_K sub-block ([`Q4KMatrix`]),
/// the four rows' scales beside each other. Rows past `rows` in the last tile are zero.
#[derive(Clone)]
pub struct Q4_0Matrix {
    rows: usize,
    cols: usize,
    /// Tiles × blocks × [`SUB_BYTES`].
    qs: Vec<u8>,
    /// Tiles × blocks × TILE rows.
    d: Vec<f32>,
}

impl Q4_0Matrix {
    /// The matrix stored in `bytes` as GGUF stores a q4_0 tensor of `rows` rows of `cols`
    /// values (a multiple of 32).
    pub fn from_ggml_bytes(rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        let nb = cols / SUB;
        if cols == 0 || !cols.is_multiple_of(SUB) || bytes.len() != rows * nb * Q4_0_BYTES {
            return Err(Error::Parameter(format!(
                "q4_0 data of {} bytes does not fit a [{rows}, {cols}] matrix",
                bytes.len()
            )));
        }
        let tiles = rows.div_ceil(TILE);
        let mut m = Self {
            rows,
            cols,
            qs: vec![0; tiles * cols * TILE / 2],
            d: vec![0.0; tiles * nb * TILE],
        };
        for (r, row) in bytes.chunks_exact(nb * Q4_0_BYTES).enumerate() {
            for (b, block) in row.chunks_exact(Q4_0_BYTES).enumerate() {
                let block = Block0::from_ggml(block.try_into().expect("a block"));
                let tb = m.tile_block(r, b);
                m.d[tb * TILE + r % TILE] = block.d;
                pack_run(&block.q, r % TILE, &mut m.qs[tb * SUB_BYTES..][..SUB_BYTES]);
            }
        }
        Ok(m)
    }

    /// Where block `b` of row `r`'s tile starts, counted in blocks of a tile.
    fn tile_block(&self, r: usize, b: usize) -> usize {
        r / TILE * (self.cols / SUB) + b
    }

    /// Block `b` of row `r`.
    pub fn block(&self, r: usize, b: usize) -> Block0 {
        assert!(r < self.rows, "row {r} of {}", self.rows);
        let tb = self.tile_block(r, b);
        let mut q = [0u8; SUB];
        unpack_run(&self.qs[tb * SUB_BYTES..][..SUB_BYTES], r % TILE, &mut q);
        Block0 {
            d: self.d[tb * TILE + r % TILE],
            q,
        }
    }

    /// Row `r`'s blocks, in order.
    pub fn row(&self, r: usize) -> Vec<Block0> {
        (0..self.cols / SUB).map(|b| self.block(r, b)).collect()
    }

    /// The blocks of rows `rows`, as GGUF stores them.
    pub fn ggml_rows(&self, rows: Range<usize>) -> Vec<u8> {
        let mut out = Vec::with_capacity(rows.len() * self.cols / SUB * Q4_0_BYTES);
        for r in rows {
            for b in 0..self.cols / SUB {
                out.extend_from_slice(&self.block(r, b).to_ggml());
            }
        }
        out
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held.
    pub fn byte_size(&self) -> usize {
        self.qs.len() + 4 * self.d.len()
    }

    /// Row `r` as f32, as ggml's `dequantize_row_q4_0` computes it.
    pub fn dequantize_row(&self, r: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.cols];
        for (b, o) in out.chunks_exact_mut(SUB).enumerate() {
            let block = self.block(r, b);
            for (o, &q) in o.iter_mut().zip(&block.q) {
                *o = f32::from(i16::from(q) - 8) * block.d;
            }
        }
        out
    }

    /// `x · Wᵀ`, as [`Q4KMatrix::matmul_then`].
    pub fn matmul_then<F>(&self, x: &[f32], m: usize, then: F) -> Vec<f32>
    where
        F: Fn(usize, f32) -> f32 + Sync + Send,
    {
        matmul_then(self, x, m, then)
    }
}

impl Tiles for Q4_0Matrix {
    type Tile<'a> = Q4_0Tile<'a>;
    const PER: usize = SUB;

    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn tile(&self, t: usize) -> Q4_0Tile<'_> {
        let (cols, nb) = (self.cols, self.cols / SUB);
        Q4_0Tile {
            qs: &self.qs[t * cols * TILE / 2..][..cols * TILE / 2],
            d: &self.d[t * nb * TILE..][..nb * TILE],
        }
    }

    fn dot_tile<const N: usize>(w: Q4_0Tile<'_>, x: [Row; N]) -> [[f32; TILE]; N] {
        kernel::dot_q4_0_tile(w, x)
    }
}

/// A 4-bit matrix as tiles of [`TILE`] rows, for [`matmul_then`].
trait Tiles: Sync {
    /// One tile as its kernel takes it.
    type Tile<'a>: Copy
    where
        Self: 'a;
    /// Activation values per activation scale.
    const PER: usize;
    /// `(rows, cols)`.
    fn shape(&self) -> (usize, usize);
    /// Tile `t` (rows `TILE·t..TILE·t + TILE`).
    fn tile(&self, t: usize) -> Self::Tile<'_>;
    /// A tile's rows times `N` activation rows: `[activation row][weight row]`.
    fn dot_tile<const N: usize>(w: Self::Tile<'_>, x: [Row; N]) -> [[f32; TILE]; N];
}

/// `x · Wᵀ` for `x` of `m` rows: activations quantized once, output rows split in whole tiles
/// over the threads ([`tiles_into`]).
fn matmul_then<T: Tiles, F>(w: &T, x: &[f32], m: usize, then: F) -> Vec<f32>
where
    F: Fn(usize, f32) -> f32 + Sync + Send,
{
    let (rows, cols) = w.shape();
    let x = ActivationRows::new(x, m, cols, T::PER);
    crate::parallel::by_output_rows(rows, m, TILE, |range, out| {
        tiles_into(&Pass { w, x: &x }, m, range.clone(), out);
        crate::parallel::apply(range.start, out, &then);
    })
}

/// A 4-bit matrix and activation rows, as [`tiles_into`] passes over them.
struct Pass<'a, T> {
    w: &'a T,
    x: &'a ActivationRows,
}

impl<T: Tiles> TilePass for Pass<'_, T> {
    #[inline(always)]
    fn pass<const N: usize>(&self, t: usize, first: usize) -> [[f32; TILE]; N] {
        T::dot_tile::<N>(
            self.w.tile(t),
            std::array::from_fn(|i| self.x.row(first + i)),
        )
    }
}

/// One q4_K tile of weight rows as the kernels take it (see [`Q4KMatrix`]).
#[derive(Clone, Copy)]
struct Q4KTile<'a> {
    qs: &'a [u8],
    scales: &'a [u8],
    mins: &'a [u8],
    d: &'a [f32],
    dmin: &'a [f32],
}

impl Q4KTile<'_> {
    /// The super-blocks per row of a product of this tile with activation rows `x`, once
    /// checked that every part has the length the tile's rows give it: what keeps the kernels'
    /// unchecked loads in bounds.
    fn blocks<const N: usize>(&self, x: &[Row; N]) -> usize {
        let nb = self.d.len() / TILE;
        assert!(self.qs.len() == nb * SUBS * SUB_BYTES && self.dmin.len() == nb * TILE);
        assert!(self.scales.len() == nb * SUBS * TILE && self.mins.len() == nb * SUBS * TILE);
        assert!(x.iter().all(|r| r.fits(nb * QK_K, nb)));
        nb
    }
}

/// One q4_0 tile of weight rows as the kernels take it (see [`Q4_0Matrix`]).
#[derive(Clone, Copy)]
struct Q4_0Tile<'a> {
    qs: &'a [u8],
    d: &'a [f32],
}

impl Q4_0Tile<'_> {
    /// The blocks per row, once checked as [`Q4KTile::blocks`] checks.
    fn blocks<const N: usize>(&self, x: &[Row; N]) -> usize {
        let nb = self.d.len() / TILE;
        assert!(self.qs.len() == nb * SUB_BYTES);
        assert!(x.iter().all(|r| r.fits(nb * SUB, nb)));
        nb
    }
}

/// Activation rows in 8 bits (`per` values share one f32 scale amax / 127, values rounded
/// half away from zero; see the module comment), with each 32 values' sum, for q4_K's minima
/// and q4_0's zero; made once per product.
pub struct ActivationRows {
    cols: usize,
    per: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    sums: Vec<i32>,
}

/// One activation row of an [`ActivationRows`].
#[derive(Clone, Copy)]
struct Row<'a> {
    qs: &'a [i8],
    d: &'a [f32],
    sums: &'a [i32],
}

impl Row<'_> {
    /// Whether the row holds `cols` values in `scales` scale blocks.
    fn fits(&self, cols: usize, scales: usize) -> bool {
        self.qs.len() == cols && self.d.len() == scales && self.sums.len() == cols / SUB
    }
}

impl ActivationRows {
    /// Quantizes `m` rows of `cols` values (a multiple of `per`, itself a multiple of 32).
    pub fn new(x: &[f32], m: usize, cols: usize, per: usize) -> Self {
        assert!(
            per.is_multiple_of(SUB) && cols.is_multiple_of(per) && x.len() == m * cols,
            "[{m}, {cols}] rows in scale blocks of {per}"
        );
        let mut qs = vec![0i8; m * cols];
        let mut d = vec![0f32; m * cols / per];
        for ((xb, qb), d) in x
            .chunks_exact(per)
            .zip(qs.chunks_exact_mut(per))
            .zip(d.iter_mut())
        {
            let subs = xb
                .chunks_exact(SUB)
                .map(|s| s.try_into().expect("32 values"));
            let id;
            (*d, id) = scale_for(subs.clone().map(amax).fold(0f32, f32::max), Q8_LEVELS);
            for (s, q) in subs.zip(qb.chunks_exact_mut(SUB)) {
                round_scaled(s, id, q.try_into().expect("32 values"));
            }
        }
        let sums = qs
            .chunks_exact(SUB)
            .map(|s| s.iter().map(|&v| i32::from(v)).sum())
            .collect();
        Self {
            cols,
            per,
            qs,
            d,
            sums,
        }
    }

    /// Row `i`'s values and its scales.
    pub fn parts(&self, i: usize) -> (&[i8], &[f32]) {
        let r = self.row(i);
        (r.qs, r.d)
    }

    fn row(&self, i: usize) -> Row<'_> {
        let (c, s, k) = (self.cols, self.cols / self.per, self.cols / SUB);
        Row {
            qs: &self.qs[i * c..][..c],
            d: &self.d[i * s..][..s],
            sums: &self.sums[i * k..][..k],
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod kernel {
    //! wasm: per run of 32 values, each of a tile's four vectors, masked and shifted, is two
    //! vectors of four values of four rows; each meets the four activations it multiplies,
    //! repeated in every lane (`v128.load32_splat`), in an i8 dot product that adds up per
    //! lane, so the four rows' sums come out in the four lanes ([`run_sums`]). q4_K scales
    //! them by the rows' 6-bit scales in i32, meets the minima with the activations' sums the
    //! same way and takes one float step per super-block; q4_0 takes the zero off and one
    //! float step per block; both as the references ([`super::dot_q4k`], [`super::dot_q4_0`])
    //! do. With relaxed-simd, 16 products per `i32x4.relaxed_dot_i8x16_i7x16_add_s` (the
    //! nibbles are the 7-bit operand) where that is one instruction; else per
    //! `i16x8.relaxed_dot_i8x16_i7x16_s`, whose pairs of products (at most 2·127·15) add up in
    //! i16 over the run (eight of them: at most 30,480) and widen to i32 once per run, by an
    //! `i32x4.dot_i16x8_s` with ones ([`crate::relaxed_dot`]): in Chromium on a Zen 4 the
    //! widget job (five rows) on q4_K and q4_0 then took a fifth less time, greedy decoding
    //! about a tenth. Without relaxed-simd, both widen to i16 and `i32x4.dot_i16x8_s`
    //! multiplies and pairs them, the pairs of two rows added once per run.
    use super::{Q4KTile, Q4_0Tile, Row, SUB, SUBS, SUB_BYTES, TILE};
    use core::arch::wasm32::*;

    /// A q4_K tile's rows times `N` activation rows: `[activation row][weight row]`.
    #[inline(always)]
    pub(super) fn dot_q4k_tile<const N: usize>(w: Q4KTile, x: [Row; N]) -> [[f32; TILE]; N] {
        crate::quant::by_spelling(|| q4k_tile::<N, true>(w, x), || q4k_tile::<N, false>(w, x))
    }

    /// [`dot_q4k_tile`], its dot products fused or not (see [`crate::relaxed_dot`]; one
    /// spelling without relaxed-simd).
    #[inline(always)]
    fn q4k_tile<const N: usize, const FUSED: bool>(w: Q4KTile, x: [Row; N]) -> [[f32; TILE]; N] {
        let nb = w.blocks(&x);
        let mut totals = [f32x4_splat(0.0); N];
        // SAFETY: every offset below is within the lengths `Q4KTile::blocks` checked; v128
        // loads need no alignment.
        unsafe {
            let widen = |p: *const u8| {
                u32x4_extend_low_u16x8(u16x8_extend_low_u8x16(v128_load32_zero(p as *const u32)))
            };
            let mut sumi = [i32x4_splat(0); N];
            let mut summ = [i32x4_splat(0); N];
            // One loop over every run of the row, the float step after each super-block's
            // last: a loop the compiler does not unroll eight times (the page's size).
            for run in 0..nb * SUBS {
                let at = run * TILE;
                let scale = widen(w.scales.as_ptr().add(at));
                let min = widen(w.mins.as_ptr().add(at));
                let sums = run_sums::<N, FUSED>(
                    w.qs.as_ptr().add(run * SUB_BYTES),
                    std::array::from_fn(|i| x[i].qs.as_ptr().add(run * SUB)),
                );
                for i in 0..N {
                    sumi[i] = i32x4_add(sumi[i], i32x4_mul(sums[i], scale));
                    let xs = i32x4_splat(*x[i].sums.get_unchecked(run));
                    summ[i] = i32x4_add(summ[i], i32x4_mul(min, xs));
                }
                if run % SUBS != SUBS - 1 {
                    continue;
                }
                let b = run / SUBS;
                let d = v128_load(w.d.as_ptr().add(b * TILE) as *const v128);
                let dmin = v128_load(w.dmin.as_ptr().add(b * TILE) as *const v128);
                for i in 0..N {
                    let dx = f32x4_splat(*x[i].d.get_unchecked(b));
                    let t = f32x4_sub(
                        f32x4_mul(f32x4_mul(d, dx), f32x4_convert_i32x4(sumi[i])),
                        f32x4_mul(f32x4_mul(dmin, dx), f32x4_convert_i32x4(summ[i])),
                    );
                    totals[i] = f32x4_add(totals[i], t);
                    (sumi[i], summ[i]) = (i32x4_splat(0), i32x4_splat(0));
                }
            }
            totals.map(|t| core::mem::transmute(t))
        }
    }

    /// A q4_0 tile's rows times `N` activation rows: `[activation row][weight row]`.
    #[inline(always)]
    pub(super) fn dot_q4_0_tile<const N: usize>(w: Q4_0Tile, x: [Row; N]) -> [[f32; TILE]; N] {
        crate::quant::by_spelling(
            || q4_0_tile::<N, true>(w, x),
            || q4_0_tile::<N, false>(w, x),
        )
    }

    /// [`dot_q4_0_tile`], its dot products fused or not (as [`q4k_tile`]).
    #[inline(always)]
    fn q4_0_tile<const N: usize, const FUSED: bool>(w: Q4_0Tile, x: [Row; N]) -> [[f32; TILE]; N] {
        let nb = w.blocks(&x);
        let mut totals = [f32x4_splat(0.0); N];
        // SAFETY: every offset below is within the lengths `Q4_0Tile::blocks` checked.
        unsafe {
            for b in 0..nb {
                let sums = run_sums::<N, FUSED>(
                    w.qs.as_ptr().add(b * SUB_BYTES),
                    std::array::from_fn(|i| x[i].qs.as_ptr().add(b * SUB)),
                );
                let d = v128_load(w.d.as_ptr().add(b * TILE) as *const v128);
                for i in 0..N {
                    let zero = i32x4_splat(8 * *x[i].sums.get_unchecked(b));
                    let dx = f32x4_splat(*x[i].d.get_unchecked(b));
                    let t = f32x4_mul(
                        f32x4_mul(d, dx),
                        f32x4_convert_i32x4(i32x4_sub(sums[i], zero)),
                    );
                    totals[i] = f32x4_add(totals[i], t);
                }
            }
            totals.map(|t| core::mem::transmute(t))
        }
    }

    /// One run of a tile (at `wp`) times `N` activation rows' 32 values (at `xp`): per
    /// activation row, the four weight rows' exact sums of q·x.
    #[cfg(target_feature = "relaxed-simd")]
    #[inline(always)]
    unsafe fn run_sums<const N: usize, const FUSED: bool>(
        wp: *const u8,
        xp: [*const i8; N],
    ) -> [v128; N] {
        // Fused: per activation row, two chains of i32 sums. Split: one chain of i16 pairs of
        // products, lane 2r + h holding half h of weight row r's (exact: see the module
        // comment), widened once at the end.
        let mut acc = [[i32x4_splat(0); 2]; N];
        for v in 0..SUB_BYTES / 16 {
            let wv = v128_load(wp.add(16 * v) as *const v128);
            let (lo, hi) = (v128_and(wv, u8x16_splat(0xF)), u8x16_shr(wv, 4));
            for i in 0..N {
                let xl = v128_load32_splat(xp[i].add(8 * v) as *const u32);
                let xh = v128_load32_splat(xp[i].add(8 * v + 4) as *const u32);
                if FUSED {
                    acc[i][0] = i32x4_relaxed_dot_i8x16_i7x16_add(xl, lo, acc[i][0]);
                    acc[i][1] = i32x4_relaxed_dot_i8x16_i7x16_add(xh, hi, acc[i][1]);
                } else {
                    acc[i][0] = i16x8_add(acc[i][0], i16x8_relaxed_dot_i8x16_i7x16(xl, lo));
                    acc[i][0] = i16x8_add(acc[i][0], i16x8_relaxed_dot_i8x16_i7x16(xh, hi));
                }
            }
        }
        acc.map(|[a, b]| {
            if FUSED {
                i32x4_add(a, b)
            } else {
                i32x4_dot_i16x8(a, i16x8_splat(1))
            }
        })
    }

    #[cfg(not(target_feature = "relaxed-simd"))]
    #[inline(always)]
    unsafe fn run_sums<const N: usize, const FUSED: bool>(
        wp: *const u8,
        xp: [*const i8; N],
    ) -> [v128; N] {
        // Per activation row, rows 0–1's and rows 2–3's pairs of products.
        let mut acc = [[i32x4_splat(0); 2]; N];
        for v in 0..SUB_BYTES / 16 {
            let wv = v128_load(wp.add(16 * v) as *const v128);
            let (lo, hi) = (v128_and(wv, u8x16_splat(0xF)), u8x16_shr(wv, 4));
            let w = [
                u16x8_extend_low_u8x16(lo),
                u16x8_extend_high_u8x16(lo),
                u16x8_extend_low_u8x16(hi),
                u16x8_extend_high_u8x16(hi),
            ];
            for i in 0..N {
                let xl = i16x8_extend_low_i8x16(v128_load32_splat(xp[i].add(8 * v) as *const u32));
                let xh =
                    i16x8_extend_low_i8x16(v128_load32_splat(xp[i].add(8 * v + 4) as *const u32));
                acc[i][0] = i32x4_add(acc[i][0], i32x4_dot_i16x8(w[0], xl));
                acc[i][1] = i32x4_add(acc[i][1], i32x4_dot_i16x8(w[1], xl));
                acc[i][0] = i32x4_add(acc[i][0], i32x4_dot_i16x8(w[2], xh));
                acc[i][1] = i32x4_add(acc[i][1], i32x4_dot_i16x8(w[3], xh));
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
    //! Native: on x86-64 with AVX2, per run of 32 values, two 32-byte loads hold the tile's
    //! four vectors; masked and shifted they are four vectors of two runs of four values of
    //! four rows, each meeting its activations laid out four by four (a `vpermd` of the run's
    //! 32 activations); `vpmaddubsw` (nibbles unsigned, activations signed: a pair is at most
    //! 2·15·128, and four such sums stay below 2¹⁵) and one `vpmaddwd` give eight partial sums,
    //! and the two 128-bit halves added are the four rows' sums; then as in the wasm kernels.
    //! Elsewhere, portable Rust. Both add as the references do.
    use super::{Q4KTile, Q4_0Tile, Row, QK_K, SUB, SUBS, SUB_BYTES, TILE};

    /// Row `r`'s exact Σq·x over a run of a tile (`run`) and 32 activations (`x`).
    fn run_dot(run: &[u8], r: usize, x: &[i8]) -> i32 {
        let mut dot = 0i32;
        for v in 0..4 {
            for u in 0..4 {
                let byte = run[16 * v + 4 * r + u];
                dot += i32::from(byte & 0xF) * i32::from(x[8 * v + u]);
                dot += i32::from(byte >> 4) * i32::from(x[8 * v + 4 + u]);
            }
        }
        dot
    }

    /// A q4_K tile's rows times `N` activation rows, one value at a time.
    pub(super) fn portable_q4k<const N: usize>(w: Q4KTile, x: [Row; N]) -> [[f32; TILE]; N] {
        let nb = w.blocks(&x);
        let mut totals = [[0f32; TILE]; N];
        for b in 0..nb {
            for (i, t) in totals.iter_mut().enumerate() {
                for (r, t) in t.iter_mut().enumerate() {
                    let (mut sumi, mut summ) = (0i32, 0i32);
                    for s in 0..SUBS {
                        let run = &w.qs[(b * SUBS + s) * SUB_BYTES..][..SUB_BYTES];
                        let dot = run_dot(run, r, &x[i].qs[b * QK_K + s * SUB..][..SUB]);
                        let at = (b * SUBS + s) * TILE + r;
                        sumi += i32::from(w.scales[at]) * dot;
                        summ += i32::from(w.mins[at]) * x[i].sums[b * SUBS + s];
                    }
                    let dx = x[i].d[b];
                    let (d, dmin) = (w.d[b * TILE + r], w.dmin[b * TILE + r]);
                    *t += (d * dx) * sumi as f32 - (dmin * dx) * summ as f32;
                }
            }
        }
        totals
    }

    /// A q4_0 tile's rows times `N` activation rows, one value at a time.
    pub(super) fn portable_q4_0<const N: usize>(w: Q4_0Tile, x: [Row; N]) -> [[f32; TILE]; N] {
        let nb = w.blocks(&x);
        let mut totals = [[0f32; TILE]; N];
        for b in 0..nb {
            for (i, t) in totals.iter_mut().enumerate() {
                for (r, t) in t.iter_mut().enumerate() {
                    let run = &w.qs[b * SUB_BYTES..][..SUB_BYTES];
                    let dot = run_dot(run, r, &x[i].qs[b * SUB..][..SUB]);
                    let zero = 8 * x[i].sums[b];
                    *t += (w.d[b * TILE + r] * x[i].d[b]) * (dot - zero) as f32;
                }
            }
        }
        totals
    }

    #[cfg(target_arch = "x86_64")]
    pub(super) mod x86 {
        use super::super::{Q4KTile, Q4_0Tile, Row, QK_K, SUB, SUBS, SUB_BYTES, TILE};
        use std::arch::x86_64::*;

        /// One run of a tile (at `wp`) times `N` activation rows' 32 values (at `xp`): per
        /// activation row, the four weight rows' exact sums of q·x.
        #[target_feature(enable = "avx2")]
        #[inline]
        unsafe fn run_sums<const N: usize>(wp: *const u8, xp: [*const i8; N]) -> [__m128i; N] {
            // Activation runs for (low nibbles, high nibbles) of vectors 0–1 and 2–3: run k is
            // values 4k..4k + 3, and vector v holds runs 2v (low) and 2v + 1 (high).
            let spread = [
                _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2),
                _mm256_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3),
                _mm256_setr_epi32(4, 4, 4, 4, 6, 6, 6, 6),
                _mm256_setr_epi32(5, 5, 5, 5, 7, 7, 7, 7),
            ];
            let mask = _mm256_set1_epi8(0xF);
            let w01 = _mm256_loadu_si256(wp as *const __m256i);
            let w23 = _mm256_loadu_si256(wp.add(32) as *const __m256i);
            let nibbles = [
                _mm256_and_si256(w01, mask),
                _mm256_and_si256(_mm256_srli_epi16::<4>(w01), mask),
                _mm256_and_si256(w23, mask),
                _mm256_and_si256(_mm256_srli_epi16::<4>(w23), mask),
            ];
            // A loop, not `xp.map(..)`: a closure would not inherit the function's features,
            // and its intrinsics would become calls.
            let mut sums = [_mm_setzero_si128(); N];
            for (sum, xp) in sums.iter_mut().zip(xp) {
                let xv = _mm256_loadu_si256(xp as *const __m256i);
                let mut pairs = _mm256_setzero_si256();
                for (q, k) in nibbles.iter().zip(&spread) {
                    let xk = _mm256_permutevar8x32_epi32(xv, *k);
                    pairs = _mm256_add_epi16(pairs, _mm256_maddubs_epi16(*q, xk));
                }
                let acc = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
                *sum = _mm_add_epi32(
                    _mm256_castsi256_si128(acc),
                    _mm256_extracti128_si256::<1>(acc),
                );
            }
            sums
        }

        #[inline]
        unsafe fn store(t: __m128) -> [f32; TILE] {
            let mut out = [0f32; TILE];
            _mm_storeu_ps(out.as_mut_ptr(), t);
            out
        }

        #[target_feature(enable = "avx2")]
        pub(in crate::q4) unsafe fn q4k<const N: usize>(
            w: Q4KTile,
            x: [Row; N],
        ) -> [[f32; TILE]; N] {
            // Every load below is in bounds by `Q4KTile::blocks`'s checks.
            let nb = w.blocks(&x);
            // A macro, not a closure: a closure would not inherit the function's features.
            macro_rules! widen {
                ($p:expr) => {
                    _mm_cvtepu8_epi32(_mm_cvtsi32_si128(($p as *const i32).read_unaligned()))
                };
            }
            let mut totals = [_mm_setzero_ps(); N];
            for b in 0..nb {
                let mut sumi = [_mm_setzero_si128(); N];
                let mut summ = [_mm_setzero_si128(); N];
                for s in 0..SUBS {
                    let at = (b * SUBS + s) * TILE;
                    let scale = widen!(w.scales.as_ptr().add(at));
                    let min = widen!(w.mins.as_ptr().add(at));
                    let sums = run_sums::<N>(
                        w.qs.as_ptr().add((b * SUBS + s) * SUB_BYTES),
                        std::array::from_fn(|i| x[i].qs.as_ptr().add(b * QK_K + s * SUB)),
                    );
                    for i in 0..N {
                        sumi[i] = _mm_add_epi32(sumi[i], _mm_mullo_epi32(sums[i], scale));
                        let xs = _mm_set1_epi32(*x[i].sums.get_unchecked(b * SUBS + s));
                        summ[i] = _mm_add_epi32(summ[i], _mm_mullo_epi32(min, xs));
                    }
                }
                let d = _mm_loadu_ps(w.d.as_ptr().add(b * TILE));
                let dmin = _mm_loadu_ps(w.dmin.as_ptr().add(b * TILE));
                for i in 0..N {
                    let dx = _mm_set1_ps(*x[i].d.get_unchecked(b));
                    let t = _mm_sub_ps(
                        _mm_mul_ps(_mm_mul_ps(d, dx), _mm_cvtepi32_ps(sumi[i])),
                        _mm_mul_ps(_mm_mul_ps(dmin, dx), _mm_cvtepi32_ps(summ[i])),
                    );
                    totals[i] = _mm_add_ps(totals[i], t);
                }
            }
            let mut out = [[0f32; TILE]; N];
            for (o, t) in out.iter_mut().zip(totals) {
                *o = store(t);
            }
            out
        }

        #[target_feature(enable = "avx2")]
        pub(in crate::q4) unsafe fn q4_0<const N: usize>(
            w: Q4_0Tile,
            x: [Row; N],
        ) -> [[f32; TILE]; N] {
            // Every load below is in bounds by `Q4_0Tile::blocks`'s checks.
            let nb = w.blocks(&x);
            let mut totals = [_mm_setzero_ps(); N];
            for b in 0..nb {
                let sums = run_sums::<N>(
                    w.qs.as_ptr().add(b * SUB_BYTES),
                    std::array::from_fn(|i| x[i].qs.as_ptr().add(b * SUB)),
                );
                let d = _mm_loadu_ps(w.d.as_ptr().add(b * TILE));
                for i in 0..N {
                    let zero = _mm_set1_epi32(8 * *x[i].sums.get_unchecked(b));
                    let dx = _mm_set1_ps(*x[i].d.get_unchecked(b));
                    let t = _mm_mul_ps(
                        _mm_mul_ps(d, dx),
                        _mm_cvtepi32_ps(_mm_sub_epi32(sums[i], zero)),
                    );
                    totals[i] = _mm_add_ps(totals[i], t);
                }
            }
            let mut out = [[0f32; TILE]; N];
            for (o, t) in out.iter_mut().zip(totals) {
                *o = store(t);
            }
            out
        }
    }

    /// A q4_K tile's rows times `N` activation rows with the best kernel this CPU runs.
    pub(super) fn dot_q4k_tile<const N: usize>(w: Q4KTile, x: [Row; N]) -> [[f32; TILE]; N] {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the kernel runs only on a CPU with the feature it was compiled for.
            return unsafe { x86::q4k(w, x) };
        }
        portable_q4k(w, x)
    }

    /// A q4_0 tile's rows times `N` activation rows with the best kernel this CPU runs.
    pub(super) fn dot_q4_0_tile<const N: usize>(w: Q4_0Tile, x: [Row; N]) -> [[f32; TILE]; N] {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { x86::q4_0(w, x) };
        }
        portable_q4_0(w, x)
    }
}

#[cfg(all(test, not(all(target_arch = "wasm32", target_feature = "simd128"))))]
mod tests {
    use super::*;

    /// Random bytes from a fixed generator.
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 33) as u8
            })
            .collect()
    }

    /// Rows of random blocks of `size` bytes with positive f16 scales at `scales` (byte offsets
    /// of the f16s' high bytes), from 2^-10 to 2^-6.
    fn blocks(rows_blocks: usize, size: usize, scales: &[usize], seed: u64) -> Vec<u8> {
        let mut b = bytes(rows_blocks * size, seed);
        for block in b.chunks_exact_mut(size) {
            for &at in scales {
                // Exponent 5..=8 (biased), the top two bits of the mantissa random.
                block[at] = ((5 + (block[at] >> 6)) << 2) | (block[at] & 3);
            }
        }
        b
    }

    fn activations<const N: usize>(cols: usize, per: usize) -> ActivationRows {
        let x: Vec<f32> = bytes(N * cols, 3)
            .into_iter()
            .map(|b| f32::from(b) / 64.0 - 2.0)
            .collect();
        ActivationRows::new(&x, N, cols, per)
    }

    /// Every native q4_K and q4_0 kernel (the portable ones, and AVX2's where the CPU has it:
    /// the integration tests reach only the best one) gives, per weight row and activation row,
    /// the scalar reference's value bit for bit, for every group size.
    #[test]
    fn every_native_kernel_equals_the_scalar_reference() {
        check::<1>();
        check::<2>();
        check::<3>();
        check::<4>();
        check::<5>();
    }

    fn check<const N: usize>() {
        let (rows, cols) = (4, 2 * QK_K);
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        // q4_K.
        let w = Q4KMatrix::from_ggml_bytes(rows, cols, &blocks(rows * 2, BLOCK_BYTES, &[1, 3], 7))
            .unwrap();
        let xq = activations::<N>(cols, QK_K);
        let tile = w.tile(0);
        let rows_of = || -> [Row; N] { std::array::from_fn(|i| xq.row(i)) };
        let mut got = vec![kernel::portable_q4k(tile, rows_of())];
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the CPU has AVX2.
            got.push(unsafe { kernel::x86::q4k(tile, rows_of()) });
        }
        for (k, got) in got.iter().enumerate() {
            for (i, got) in got.iter().enumerate() {
                let (xv, xd) = xq.parts(i);
                for (r, g) in got.iter().enumerate() {
                    let want = dot_q4k(&w.row(r), xv, xd);
                    assert_eq!(
                        g.to_bits(),
                        want.to_bits(),
                        "q4_K kernel {k}, N={N}, row {r}"
                    );
                }
            }
        }
        // q4_0.
        let nb = cols / SUB;
        let w = Q4_0Matrix::from_ggml_bytes(rows, cols, &blocks(rows * nb, Q4_0_BYTES, &[1], 8))
            .unwrap();
        let xq = activations::<N>(cols, SUB);
        let tile = w.tile(0);
        let rows_of = || -> [Row; N] { std::array::from_fn(|i| xq.row(i)) };
        let mut got = vec![kernel::portable_q4_0(tile, rows_of())];
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the CPU has AVX2.
            got.push(unsafe { kernel::x86::q4_0(tile, rows_of()) });
        }
        for (k, got) in got.iter().enumerate() {
            for (i, got) in got.iter().enumerate() {
                let (xv, xd) = xq.parts(i);
                for (r, g) in got.iter().enumerate() {
                    let want = dot_q4_0(&w.row(r), xv, xd);
                    assert_eq!(
                        g.to_bits(),
                        want.to_bits(),
                        "q4_0 kernel {k}, N={N}, row {r}"
                    );
                }
            }
        }
    }
}
