//! The quantized and the f32 matrix products against their scalar references, for every
//! activation row count the kernels group differently; run natively (`tests.rs`) and in the browser (`wasm.rs`, where
//! the simd128 kernel runs).

use botcard::dense;
use botcard::ggml::GgmlMatrix;
use botcard::q4::{self, ActivationRows};
use botcard::quant::{dot_scalar, Q8Matrix, QuantizedRows, BLOCK};
use candle_core::quantized::GgmlDType;

/// Values in [-2, 2) from a fixed generator.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        })
        .collect()
}

/// Runs `check` with each way the build's kernels can spell their dot products: in the
/// relaxed-simd wasm build, fused and split (`botcard::relaxed_dot`; the engine's CPU picks one),
/// elsewhere the one.
fn each_spelling(check: impl Fn()) {
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    {
        // The engine's own, back in place afterwards for the other tests.
        let found = botcard::relaxed_dot::spelling();
        for spelling in [
            botcard::relaxed_dot::Spelling::Fused,
            botcard::relaxed_dot::Spelling::Split,
        ] {
            botcard::relaxed_dot::set(spelling);
            check();
        }
        botcard::relaxed_dot::set(found);
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "relaxed-simd")))]
    check();
}

/// Panics unless every output of `Q8Matrix::matmul` equals, bit for bit, the scalar dot product
/// of the same quantized rows, for rows of fewer than four blocks, of whole groups of four, and
/// of groups plus a remainder, with each spelling of the kernels' dot products.
pub fn kernel_equals_scalar_reference() {
    each_spelling(q8_kernel_equals_scalar_reference);
}

fn q8_kernel_equals_scalar_reference() {
    for blocks in [3, 8, 11] {
        // 200 rows: pieces of work of different lengths when split over threads.
        let (rows, cols) = (200, blocks * BLOCK);
        let w = Q8Matrix::quantize(&values(rows * cols, 1), rows, cols).unwrap();
        let weight_rows: Vec<_> = (0..rows).map(|o| w.row(o)).collect();
        let nb = cols / BLOCK;
        for m in 1..=9 {
            let x = values(m * cols, m as u64 + 7);
            let got = w.matmul(&x, m);
            let xq = QuantizedRows::new(&x, m, cols);
            let (xv, xs) = xq.parts();
            for i in 0..m {
                for (o, (wq, ws)) in weight_rows.iter().enumerate() {
                    let want = dot_scalar(
                        wq,
                        ws,
                        &xv[i * cols..(i + 1) * cols],
                        &xs[i * nb..(i + 1) * nb],
                    );
                    let g = got[i * rows + o];
                    assert_eq!(
                        g.to_bits(),
                        want.to_bits(),
                        "[{rows}, {cols}] row {o} of {m}: {g} vs {want}"
                    );
                }
            }
        }
    }
}

/// Panics unless every output of the f32 product (`dense::matmul_then`, bias added by `then`)
/// equals, bit for bit, the scalar reference dot product plus the bias, for rows shorter than
/// one pass of the kernel, of whole passes, and of passes plus a remainder, for a few
/// activation rows and a prompt's, and unless the reference itself is within rounding of the
/// sum in f64.
pub fn f32_kernel_equals_scalar_reference() {
    for cols in [5, 48, 77, 768] {
        let rows = 37;
        let w = values(rows * cols, 11);
        let bias = values(rows, 12);
        // Up to MAX_ROWS natively; in wasm a prompt's rows too.
        for m in (1..=dense::MAX_ROWS).chain([13, 64]) {
            let x = values(m * cols, m as u64 + 3);
            let got = dense::matmul_then(&w, rows, &x, m, |o, y| y + bias[o]).unwrap();
            for i in 0..m {
                let xi = &x[i * cols..(i + 1) * cols];
                for o in 0..rows {
                    let wo = &w[o * cols..(o + 1) * cols];
                    let want = dense::dot_scalar(wo, xi) + bias[o];
                    let g = got[i * rows + o];
                    assert_eq!(g.to_bits(), want.to_bits(), "[{m}, {cols}] row {o}");
                    let exact: f64 = wo.iter().zip(xi).map(|(a, b)| f64::from(a * b)).sum();
                    let err = (f64::from(dense::dot_scalar(wo, xi)) - exact).abs();
                    assert!(
                        err < 1e-5 * cols as f64,
                        "[{m}, {cols}] row {o}: off by {err}"
                    );
                }
            }
        }
    }
    assert!(dense::matmul_then(&[0.0; 6], 4, &[0.0; 3], 2, |_, y| y).is_err());
}

/// Panics unless activations quantize to 7 bits (scale max|x| / 63, rounded half away from
/// zero) held as bytes biased by 64.
pub fn activations_quantize_to_seven_bits() {
    let mut x = values(2 * BLOCK, 5);
    // Scale 1: halves round away from zero.
    x[..4].copy_from_slice(&[-63.0, 2.5, -2.5, 0.499_999_97]);
    x[4..BLOCK].fill(0.0);
    let q = QuantizedRows::new(&x, 1, 2 * BLOCK);
    let (v, s) = q.parts();
    assert_eq!(s[0], 1.0);
    assert_eq!(&v[..5], &[1, 64 + 3, 64 - 3, 64, 64]);
    let amax = x[BLOCK..].iter().fold(0f32, |a, v| a.max(v.abs()));
    assert_eq!(s[1], amax / 63.0);
    assert!(v.iter().all(|&b| (1..=127).contains(&b)));
    assert!(v[BLOCK..].contains(&1) || v[BLOCK..].contains(&127));
}

/// Panics unless quantizing follows ggml's `quantize_row_q8_0_ref` exactly (scale max|x|/127
/// rounded through f16; values rounded half away from zero), halves included.
pub fn quantization_equals_ggml_reference() {
    let mut x = values(64 * BLOCK, 3);
    // A block whose scale is 1: exact halves and values just below them.
    let edge = [
        127.0,
        2.5,
        -2.5,
        0.5,
        -0.5,
        126.5,
        -126.5,
        0.499_999_97,
        -1.5,
        3.0,
    ];
    x[..edge.len()].copy_from_slice(&edge);
    x[BLOCK..2 * BLOCK].fill(0.0);
    let m = Q8Matrix::quantize(&x, 64, BLOCK).unwrap();
    let (qs, scales): (Vec<i8>, Vec<f32>) =
        (0..64).fold(Default::default(), |(mut q, mut s), r| {
            let (rq, rs) = m.row(r);
            q.extend(rq);
            s.extend(rs);
            (q, s)
        });
    for (b, xb) in x.chunks(BLOCK).enumerate() {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        assert_eq!(scales[b], half::f16::from_f32(d).to_f32(), "block {b}");
        for (k, v) in xb.iter().enumerate() {
            assert_eq!(
                qs[b * BLOCK + k],
                (v * id).round() as i8,
                "block {b}, value {v}"
            );
        }
    }
    assert_eq!(&qs[1..6], &[3, -3, 1, -1, 127]);
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn quantized_kernel_equals_the_scalar_reference() {
    kernel_equals_scalar_reference();
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn f32_kernel_equals_the_scalar_reference() {
    f32_kernel_equals_scalar_reference();
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn activations_are_quantized_to_seven_bits_natively() {
    activations_quantize_to_seven_bits();
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn quantization_equals_ggml_reference_natively() {
    quantization_equals_ggml_reference();
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn a_block_quantizes_and_dequantizes_as_ggml_does() {
    let x: Vec<f32> = (0..32).map(|i| i as f32 - 10.5).collect();
    let w = Q8Matrix::quantize(&x, 1, 32).unwrap();
    let (qs, scales) = w.row(0);
    let d = half::f16::from_f32(20.5 / 127.0).to_f32();
    assert_eq!(scales, [d]);
    assert_eq!(qs[31], 127);
    assert_eq!(qs[0], (-10.5f32 * (127.0 / 20.5)).round() as i8);
    let back = w.dequantize_row(0);
    for (a, b) in back.iter().zip(&x) {
        assert!((a - b).abs() <= d * 0.51 + 1e-3, "{a} vs {b}");
    }
    assert!(Q8Matrix::quantize(&[0.0; 48], 1, 48).is_err());
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn the_quantized_product_is_close_to_the_f32_product() {
    let (rows, cols) = (16, 256);
    let wf = values(rows * cols, 3);
    let x = values(2 * cols, 4);
    let got = Q8Matrix::quantize(&wf, rows, cols).unwrap().matmul(&x, 2);
    for i in 0..2 {
        for o in 0..rows {
            let exact: f32 = (0..cols).map(|k| wf[o * cols + k] * x[i * cols + k]).sum();
            assert!((got[i * rows + o] - exact).abs() < 0.02 * (cols as f32).sqrt() * 2.0);
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn a_range_ending_at_the_last_row_computes_the_last_partial_tile() {
    // 7 rows: tiles of four, the second one row short.
    let (rows, cols, m) = (7, 2 * BLOCK, 2);
    let w = Q8Matrix::quantize(&values(rows * cols, 21), rows, cols).unwrap();
    let x = values(m * cols, 22);
    let want = w.matmul(&x, m);
    let mut got = vec![f32::NAN; m * rows];
    let (a, b) = got.split_at_mut(rows);
    w.matmul_rows(&QuantizedRows::new(&x, m, cols), 0..rows, &mut [a, b]);
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

/// The 4-bit formats, each with its GGUF block's size in bytes and values, where its f16
/// scales' high bytes are, and how many activations share a scale.
const FORMATS: [(GgmlDType, usize, usize, &[usize], usize); 2] = [
    (GgmlDType::Q4K, q4::BLOCK_BYTES, q4::QK_K, &[1, 3], q4::QK_K),
    (GgmlDType::Q4_0, q4::Q4_0_BYTES, 32, &[1], 32),
];

/// `rows` rows of `blocks` blocks as a GGUF file holds them: random nibbles (and q4_K's
/// scales and minima), and finite positive f16 scales.
fn q4_bytes(size: usize, scales: &[usize], rows: usize, blocks: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    let mut byte = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as u8
    };
    let mut out: Vec<u8> = (0..rows * blocks * size).map(|_| byte()).collect();
    for block in out.chunks_exact_mut(size) {
        for &at in scales {
            // Positive f16s from 2^-10 to 2^-6 (biased exponent 5..=8): scales of a trained
            // GPT-2's weights.
            block[at] = ((5 + (block[at] >> 6)) << 2) | (block[at] & 3);
        }
    }
    out
}

/// Weight row `o` of `w` times activation row `i` of `xq`, as the format's reference computes.
fn reference_dot(w: &GgmlMatrix, o: usize, xq: &ActivationRows, i: usize) -> f32 {
    let (xv, xd) = xq.parts(i);
    match w {
        GgmlMatrix::Q4K(w) => q4::dot_q4k(&w.row(o), xv, xd),
        GgmlMatrix::Q4_0(w) => q4::dot_q4_0(&w.row(o), xv, xd),
    }
}

/// Panics unless every output of the q4_K and q4_0 products equals, bit for bit, the format's
/// scalar reference on the same quantized rows, for every activation row count the kernels
/// group differently and matrices whose last tile is partial, with each spelling of the kernels'
/// dot products, and unless the product is within the quantization's error of the f32 product
/// of the dequantized weights.
pub fn q4_kernels_equal_scalar_reference() {
    each_spelling(q4_kernels_equal_their_reference);
}

fn q4_kernels_equal_their_reference() {
    for (dtype, size, per_block, scales, per) in FORMATS {
        for (rows, blocks) in [(7, 256 / per_block), (37, 768 / per_block)] {
            let cols = blocks * per_block;
            let bytes = q4_bytes(size, scales, rows, blocks, 5);
            let w = GgmlMatrix::from_bytes(dtype, rows, cols, &bytes)
                .unwrap()
                .unwrap();
            let dense: Vec<Vec<f32>> = (0..rows).map(|o| w.dequantize_row(o)).collect();
            for m in 1..=9 {
                let x = values(m * cols, m as u64 + 21);
                let got = w.matmul_then(&x, m, |_, v| v);
                let xq = ActivationRows::new(&x, m, cols, per);
                for i in 0..m {
                    let xi = &x[i * cols..(i + 1) * cols];
                    let top = xi.iter().fold(0f32, |a, v| a.max(v.abs()));
                    for (o, wo) in dense.iter().enumerate() {
                        let want = reference_dot(&w, o, &xq, i);
                        let g = got[i * rows + o];
                        let at =
                            format!("{dtype:?} [{rows}, {cols}] row {o}, activation {i} of {m}");
                        assert_eq!(g.to_bits(), want.to_bits(), "{at}");
                        let exact: f32 = wo.iter().zip(xi).map(|(a, b)| a * b).sum();
                        let scale: f32 = wo.iter().map(|a| a.abs()).sum::<f32>() * top;
                        assert!((g - exact).abs() <= scale / 127.0, "{at}: {g} vs {exact}");
                    }
                }
            }
        }
    }
}

/// Panics unless a q4_K or q4_0 matrix reads back, row by row, as the bytes it was made from,
/// and dequantizes to what candle's reference (`to_float`) makes of those bytes.
pub fn q4_matrices_round_trip_ggml_bytes() {
    for (dtype, size, per_block, scales, _) in FORMATS {
        let (rows, blocks) = (9, 512 / per_block);
        let cols = blocks * per_block;
        let bytes = q4_bytes(size, scales, rows, blocks, 9);
        let w = GgmlMatrix::from_bytes(dtype, rows, cols, &bytes)
            .unwrap()
            .unwrap();
        assert_eq!(w.row_bytes(0..rows), bytes, "{dtype:?}");
        let row = blocks * size;
        assert_eq!(w.row_bytes(3..5), bytes[3 * row..5 * row], "{dtype:?}");
        let reference = botcard::ggml::dequantize(dtype, &bytes, rows * cols).unwrap();
        for r in 0..rows {
            let got = w.dequantize_row(r);
            let want = &reference[r * cols..(r + 1) * cols];
            let same = got
                .iter()
                .zip(want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{dtype:?} row {r}");
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn q4_kernels_equal_the_scalar_reference() {
    q4_kernels_equal_scalar_reference();
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn q4_matrices_round_trip_their_ggml_bytes() {
    q4_matrices_round_trip_ggml_bytes();
}
