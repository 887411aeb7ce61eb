//! f32 matrix products for decoding: a few activation rows against a weight matrix [out, in]
//! (in wasm, a prompt's rows too: see [`MAX_ROWS`]).
//!
//! Why our own kernel rather than candle's matmul: in wasm candle's f32 matmul (gemm's blocked
//! kernels) runs on one thread and, for a few rows, reached 8 tok/s decoding GPT-2 124M in
//! Chromium where this kernel reaches 22. When only a few rows come in (batch-1 or a handful of
//! samples per step) the product is a pass over the weights — one dot product per output row and
//! activation row, with the weight row loaded once for all the activation rows and the output
//! rows spread over the threads (the same shape as [`crate::quant::Q8Matrix`]'s product).
//! The weights are read front to back, one row after the other: one stream from memory, which
//! the hardware prefetches well. (Four rows side by side — four streams — read a 124M's weights
//! at 12 GB/s on one core of a 2-core EPYC where one stream reads them at 28 GB/s.)
//! The products add their terms in one fixed order ([`dot_scalar`] spells it out), so the
//! simd128 kernel, the native build and the reference give the same bits.

use candle_core::{Storage, Tensor};

use crate::error::{Error, Result};

/// Terms per pass of the kernels: two f32x4 running totals per (weight row, activation row).
const LANES: usize = 8;

/// Activation rows computed side by side: each weight load serves up to four of them.
const ACT_ROWS: usize = 4;

/// Natively at most this many activation rows go through [`matmul_then`]; more (a long
/// prompt, a training batch) reuse each weight often enough that candle's blocked matmul, on
/// all cores, wins. (In wasm, where candle's matmul runs on one thread, the model sends every
/// inference product here.)
pub const MAX_ROWS: usize = 8;

/// Calls `f` with `t`'s values: in place when they are contiguous f32 in CPU memory (a loaded
/// weight, a bias), else a copy.
pub fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            if let Ok(values) = cpu.as_slice::<f32>() {
                return Ok(f(&values[start..end]));
            }
        }
    }
    Ok(f(&t.flatten_all()?.to_vec1::<f32>()?))
}

/// `x · Wᵀ` for `w` [rows, cols] and `x` of `m` rows of `cols` values: `m × rows` values,
/// row-major; each value `v` of output feature `o` becomes `then(o, v)` (a bias, an
/// activation) as soon as it is computed, on the thread that computed it.
pub fn matmul_then<F>(w: &[f32], rows: usize, x: &[f32], m: usize, then: F) -> Result<Vec<f32>>
where
    F: Fn(usize, f32) -> f32 + Sync + Send,
{
    if rows == 0 || !w.len().is_multiple_of(rows) || x.len() != m * (w.len() / rows) {
        return Err(Error::Parameter(format!(
            "a [{m}, {}] by [{rows}, {}]ᵀ product",
            x.len() / m.max(1),
            w.len() / rows.max(1)
        )));
    }
    let cols = w.len() / rows;
    Ok(crate::parallel::by_output_rows(rows, m, 1, |range, out| {
        // Tiles of one row: no range runs past `rows`.
        for (j, o) in range.clone().enumerate() {
            let w = &w[o * cols..(o + 1) * cols];
            for (first, group) in (0..)
                .step_by(ACT_ROWS)
                .zip(x.chunks(ACT_ROWS * cols.max(1)))
            {
                let xs = |r: usize| &group[r * cols..(r + 1) * cols];
                let mut put = |v: &[f32]| {
                    for (i, &v) in v.iter().enumerate() {
                        out[first + i][j] = v;
                    }
                };
                match group.len() / cols.max(1) {
                    4 => put(&kernel::dot_rows::<4>(w, std::array::from_fn(xs))),
                    3 => put(&kernel::dot_rows::<3>(w, std::array::from_fn(xs))),
                    2 => put(&kernel::dot_rows::<2>(w, std::array::from_fn(xs))),
                    _ => put(&kernel::dot_rows::<1>(w, std::array::from_fn(xs))),
                }
            }
        }
        crate::parallel::apply(range.start, out, &then);
    }))
}

/// The reference: Σ w·x with term k added to running total k mod 8 over whole passes of 8,
/// the totals combined as two f32x4 vectors would be — sᵢ = tᵢ + tᵢ₊₄, then (s₀ + s₁) + (s₂ + s₃)
/// — and the last `len mod 8` terms added one by one.
pub fn dot_scalar(w: &[f32], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len());
    let whole = w.len() / LANES * LANES;
    let mut t = [0f32; LANES];
    for (wc, xc) in w[..whole]
        .chunks_exact(LANES)
        .zip(x[..whole].chunks_exact(LANES))
    {
        for l in 0..LANES {
            t[l] += wc[l] * xc[l];
        }
    }
    finish(t, &w[whole..], &x[whole..])
}

/// The end of [`dot_scalar`]: totals `t` combined in its order, then the tail's terms.
#[inline(always)]
fn finish(t: [f32; LANES], w_tail: &[f32], x_tail: &[f32]) -> f32 {
    let s: [f32; 4] = std::array::from_fn(|i| t[i] + t[i + 4]);
    let mut total = (s[0] + s[1]) + (s[2] + s[3]);
    for (a, b) in w_tail.iter().zip(x_tail) {
        total += a * b;
    }
    total
}

/// `w · x` as the kernel of this build computes it (equal to [`dot_scalar`] bit for bit).
pub fn dot(w: &[f32], x: &[f32]) -> f32 {
    kernel::dot_rows(w, [x])[0]
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod kernel {
    //! wasm simd128: two f32x4 running totals per weight row (multiply, then add: wasm has no
    //! fused multiply-add outside relaxed-simd, whose rounding differs between machines).
    use core::arch::wasm32::*;

    use super::{finish, LANES};

    /// The dot products of the weight row `w` with `R` activation rows, each as
    /// [`super::dot_scalar`] adds.
    pub fn dot_rows<const R: usize>(w: &[f32], x: [&[f32]; R]) -> [f32; R] {
        assert!(x.iter().all(|r| r.len() == w.len()));
        let whole = w.len() / LANES * LANES;
        let mut t = [[f32x4_splat(0.0); 2]; R];
        for k in (0..whole).step_by(LANES) {
            // SAFETY: k + 8 <= whole <= the length of every slice (asserted above);
            // v128_load takes unaligned addresses.
            unsafe {
                let wv = [
                    v128_load(w.as_ptr().add(k).cast()),
                    v128_load(w.as_ptr().add(k + 4).cast()),
                ];
                for (tr, xr) in t.iter_mut().zip(&x) {
                    for (h, th) in tr.iter_mut().enumerate() {
                        let xv = v128_load(xr.as_ptr().add(k + 4 * h).cast());
                        *th = f32x4_add(*th, f32x4_mul(wv[h], xv));
                    }
                }
            }
        }
        std::array::from_fn(|r| finish(lanes(t[r]), &w[whole..], &x[r][whole..]))
    }

    /// Two f32x4 totals as the reference's eight.
    fn lanes(t: [v128; 2]) -> [f32; LANES] {
        let mut out = [0f32; LANES];
        // SAFETY: 8 f32s of room for two v128 stores.
        unsafe {
            v128_store(out.as_mut_ptr().cast(), t[0]);
            v128_store(out.as_mut_ptr().add(4).cast(), t[1]);
        }
        out
    }
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    //! x86-64: the wasm kernel's steps in SSE (every x86-64 CPU has it): two `__m128` running
    //! totals per weight row, multiply then add.
    use core::arch::x86_64::*;

    use super::{finish, LANES};

    /// The dot products of the weight row `w` with `R` activation rows, each as
    /// [`super::dot_scalar`] adds.
    pub fn dot_rows<const R: usize>(w: &[f32], x: [&[f32]; R]) -> [f32; R] {
        assert!(x.iter().all(|r| r.len() == w.len()));
        let whole = w.len() / LANES * LANES;
        // SAFETY: SSE is part of x86-64; every load reads 4 values below `whole`, within
        // every slice (asserted above), and loadu takes unaligned addresses.
        unsafe {
            let mut t = [[_mm_setzero_ps(); 2]; R];
            for k in (0..whole).step_by(LANES) {
                let wv = [
                    _mm_loadu_ps(w.as_ptr().add(k)),
                    _mm_loadu_ps(w.as_ptr().add(k + 4)),
                ];
                for (tr, xr) in t.iter_mut().zip(&x) {
                    for (h, th) in tr.iter_mut().enumerate() {
                        let xv = _mm_loadu_ps(xr.as_ptr().add(k + 4 * h));
                        *th = _mm_add_ps(*th, _mm_mul_ps(wv[h], xv));
                    }
                }
            }
            std::array::from_fn(|r| finish(lanes(t[r]), &w[whole..], &x[r][whole..]))
        }
    }

    /// Two `__m128` totals as the reference's eight.
    fn lanes(t: [__m128; 2]) -> [f32; LANES] {
        let mut out = [0f32; LANES];
        // SAFETY: 8 f32s of room for two unaligned stores.
        unsafe {
            _mm_storeu_ps(out.as_mut_ptr(), t[0]);
            _mm_storeu_ps(out.as_mut_ptr().add(4), t[1]);
        }
        out
    }
}

#[cfg(not(any(
    all(target_arch = "wasm32", target_feature = "simd128"),
    target_arch = "x86_64"
)))]
mod kernel {
    //! Elsewhere natively the reference's own loops, which the compiler turns into vector
    //! adds: eight independent totals per row.
    use super::{finish, LANES};

    /// The dot products of the weight row `w` with `R` activation rows, each as
    /// [`super::dot_scalar`] adds.
    pub fn dot_rows<const R: usize>(w: &[f32], x: [&[f32]; R]) -> [f32; R] {
        assert!(x.iter().all(|r| r.len() == w.len()));
        let whole = w.len() / LANES * LANES;
        let mut t = [[0f32; LANES]; R];
        for k in (0..whole).step_by(LANES) {
            let wc = &w[k..k + LANES];
            for (tr, xr) in t.iter_mut().zip(&x) {
                let xc = &xr[k..k + LANES];
                for l in 0..LANES {
                    tr[l] += wc[l] * xc[l];
                }
            }
        }
        std::array::from_fn(|r| finish(t[r], &w[whole..], &x[r][whole..]))
    }
}
