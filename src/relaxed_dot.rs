//! Which spelling of relaxed-simd's i8 dot product the quantized kernels use: the one that runs
//! fastest on the CPU under the page's engine.
//!
//! `i32x4.relaxed_dot_i8x16_i7x16_add_s` (16 products, added up into four i32 lanes) is one
//! instruction where the CPU has one for it: ARM's `sdot`, x86's AVX-VNNI `vpdpbusd`. On x86
//! without AVX-VNNI (AMD before Zen 5, Intel before Alder Lake) V8 lowers it to `pmaddubsw`,
//! a `pmaddwd` by a vector of ones and a `paddd`, plus two instructions that make the ones
//! again at every use. There the kernels spell it themselves ([`Spelling::Split`]): an
//! `i16x8.relaxed_dot_i8x16_i7x16_s` (`pmaddubsw` alone) and a widening by ones held in a
//! register, or several i16 dots added up before one widening where their sum cannot
//! overflow. On a Zen 4 in Chromium, greedy q8_0 decoding was 6–7% faster so and q4 products
//! a fifth faster; on ARM the same spelling would be six instructions for `sdot`'s one.
//!
//! The lowerings give different results for operands outside the 7-bit range, which
//! relaxed-simd leaves to the engine: x86 reads the i7x16 operand as unsigned bytes and
//! `pmaddubsw` saturates each pair of products to i16, `vpdpbusd` does not saturate, and ARM
//! reads the operand as signed. One product of such operands, once, tells them apart.

use core::arch::wasm32::*;
use std::sync::atomic::{AtomicU8, Ordering};

/// How a kernel writes its 16-product dot products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// `i32x4.relaxed_dot_i8x16_i7x16_add_s`: one instruction on ARM and AVX-VNNI.
    Fused,
    /// i16 pairs of products, widened to i32 by the kernel: x86 without AVX-VNNI.
    Split,
}

/// The spelling in use: 0 until found, else 1 + its index.
static SPELLING: AtomicU8 = AtomicU8::new(0);

/// The spelling for this engine, found on first use (or as [`set`] chose).
pub fn spelling() -> Spelling {
    match SPELLING.load(Ordering::Relaxed) {
        1 => Spelling::Fused,
        2 => Spelling::Split,
        _ => {
            let found = detect();
            set(found);
            found
        }
    }
}

/// Makes the kernels use `spelling` (both give the same bits; the tests run each).
pub fn set(spelling: Spelling) {
    let code = match spelling {
        Spelling::Fused => 1,
        Spelling::Split => 2,
    };
    SPELLING.store(code, Ordering::Relaxed);
}

/// [`Spelling::Split`] where the fused instruction is `pmaddubsw` and `pmaddwd`: where
/// 127·255 + 127·255 saturates to 32,767 in each half of a lane.
fn detect() -> Spelling {
    let a = core::hint::black_box(i8x16_splat(127));
    let b = core::hint::black_box(u8x16_splat(255));
    let sums = i32x4_relaxed_dot_i8x16_i7x16_add(a, b, i32x4_splat(0));
    if i32x4_extract_lane::<0>(sums) == 2 * i32::from(i16::MAX) {
        Spelling::Split
    } else {
        Spelling::Fused
    }
}
