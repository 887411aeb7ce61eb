//! Weight matrices in ggml's 4-bit block formats (q4_0, q4_K), as a pre-quantized GGUF file
//! stores them: q4_K with our own kernels ([`crate::q4k`]), q4_0 with candle's dot-product
//! kernels (simd128 in wasm) on our threads.
//!
//! Why candle's kernels for q4_0: they are ggml's reference arithmetic, already vectorized for
//! wasm, and a q4_0 file is chosen for its size, not for the last tok/s (q4_K, `botcard
//! convert`'s smallest format of better quality, is the one worth its own kernels). Candle runs
//! its quantized product on one thread in wasm, so the output rows are split over the threads
//! here ([`crate::parallel::by_output_rows`]). Tensors of the other types a GGUF may hold are
//! dequantized ([`dequantize`]).

use std::ops::Range;

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType,
};
use candle_core::quantized::GgmlDType;
use candle_core::DType;

use crate::error::{Error, Result};
use crate::q4k::Q4KMatrix;

/// A [rows, cols] matrix of ggml blocks of one type, row-major, `cols / T::BLCK_SIZE` a row.
pub struct Blocks<T> {
    rows: usize,
    cols: usize,
    data: Vec<T>,
}

/// A weight matrix W [out, in] in a 4-bit ggml format.
pub enum GgmlMatrix {
    Q4_0(Blocks<BlockQ4_0>),
    Q4K(Q4KMatrix),
}

impl GgmlMatrix {
    /// The matrix stored as `dtype` in `bytes` (GGUF's tensor data, [rows, cols] row-major);
    /// `None` for a type this module does not hold.
    pub fn from_bytes(
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<Option<Self>> {
        Ok(match dtype {
            GgmlDType::Q4_0 => Some(Self::Q4_0(Blocks::from_bytes(rows, cols, bytes)?)),
            GgmlDType::Q4K => Some(Self::Q4K(Q4KMatrix::from_ggml_bytes(rows, cols, bytes)?)),
            _ => None,
        })
    }

    /// The format's name, as `botcard convert --dtype` takes it.
    pub fn format(&self) -> &'static str {
        match self {
            Self::Q4_0(_) => crate::gguf::FileType::Q4_0.name(),
            Self::Q4K(_) => crate::gguf::FileType::Q4K.name(),
        }
    }

    /// Its ggml type.
    pub fn dtype(&self) -> GgmlDType {
        match self {
            Self::Q4_0(_) => GgmlDType::Q4_0,
            Self::Q4K(_) => GgmlDType::Q4K,
        }
    }

    /// The blocks of rows `rows`, as GGUF stores them.
    pub fn row_bytes(&self, rows: Range<usize>) -> Vec<u8> {
        match self {
            Self::Q4_0(b) => b.row_bytes(rows),
            Self::Q4K(b) => b.ggml_rows(rows),
        }
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        match self {
            Self::Q4_0(b) => b.rows,
            Self::Q4K(b) => b.rows(),
        }
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        match self {
            Self::Q4_0(b) => b.cols,
            Self::Q4K(b) => b.cols(),
        }
    }

    /// Bytes held.
    pub fn byte_size(&self) -> usize {
        match self {
            Self::Q4_0(b) => std::mem::size_of_val(b.data.as_slice()),
            Self::Q4K(b) => b.byte_size(),
        }
    }

    /// Row `r` as f32 (an embedding lookup).
    pub fn dequantize_row(&self, r: usize) -> Vec<f32> {
        match self {
            Self::Q4_0(b) => b.dequantize_row(r),
            Self::Q4K(b) => b.dequantize_row(r),
        }
    }

    /// `x · Wᵀ` for `m` rows of `x`, row-major; each value `v` of output feature `o` becomes
    /// `then(o, v)` as soon as it is computed, on the thread that computed it.
    pub fn matmul_then<F>(&self, x: &[f32], m: usize, then: F) -> Vec<f32>
    where
        F: Fn(usize, f32) -> f32 + Sync + Send,
    {
        match self {
            Self::Q4_0(b) => b.matmul_then(x, m, then),
            Self::Q4K(b) => b.matmul_then(x, m, then),
        }
    }
}

/// The candle dtype of a GGUF tensor stored as plain little-endian floats; None for blocks.
pub fn float_dtype(t: GgmlDType) -> Option<DType> {
    match t {
        GgmlDType::F32 => Some(DType::F32),
        GgmlDType::F16 => Some(DType::F16),
        GgmlDType::BF16 => Some(DType::BF16),
        _ => None,
    }
}

/// `n` values stored as `dtype` in `bytes` (GGUF's tensor data), as f32: every type a GGUF file
/// may hold. Each type costs only its own `to_float` here; candle's `QTensor` would bring every
/// type's whole kernel set (products, quantizers) into the page's WebAssembly.
pub fn dequantize(dtype: GgmlDType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    fn blocks<T: GgmlType>(bytes: &[u8], n: usize) -> Result<Vec<f32>> {
        let b = Blocks::<T>::from_bytes(1, n, bytes)?;
        let mut out = vec![0f32; n];
        T::to_float(&b.data, &mut out);
        Ok(out)
    }
    if let Some(stored) = float_dtype(dtype) {
        if bytes.len() != n * stored.size_in_bytes() {
            return Err(Error::Parameter(format!(
                "{} bytes do not hold {n} {stored:?} values",
                bytes.len()
            )));
        }
        let mut values = Vec::with_capacity(n);
        crate::model::extend_stored(&mut values, bytes, stored);
        return Ok(values);
    }
    match dtype {
        GgmlDType::Q4_0 => blocks::<BlockQ4_0>(bytes, n),
        GgmlDType::Q4_1 => blocks::<BlockQ4_1>(bytes, n),
        GgmlDType::Q5_0 => blocks::<BlockQ5_0>(bytes, n),
        GgmlDType::Q5_1 => blocks::<BlockQ5_1>(bytes, n),
        GgmlDType::Q8_0 => blocks::<BlockQ8_0>(bytes, n),
        GgmlDType::Q8_1 => blocks::<BlockQ8_1>(bytes, n),
        GgmlDType::Q2K => blocks::<BlockQ2K>(bytes, n),
        GgmlDType::Q3K => blocks::<BlockQ3K>(bytes, n),
        GgmlDType::Q4K => blocks::<BlockQ4K>(bytes, n),
        GgmlDType::Q5K => blocks::<BlockQ5K>(bytes, n),
        GgmlDType::Q6K => blocks::<BlockQ6K>(bytes, n),
        GgmlDType::Q8K => blocks::<BlockQ8K>(bytes, n),
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => unreachable!("read above as floats"),
    }
}

impl<T: GgmlType> Blocks<T> {
    fn per_row(&self) -> usize {
        self.cols / T::BLCK_SIZE
    }

    fn from_bytes(rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        let size = std::mem::size_of::<T>();
        let n = rows * (cols / T::BLCK_SIZE);
        if !cols.is_multiple_of(T::BLCK_SIZE) || bytes.len() != n * size {
            return Err(Error::Parameter(format!(
                "{:?} data of {} bytes does not fit a [{rows}, {cols}] matrix",
                T::DTYPE,
                bytes.len()
            )));
        }
        let mut data = vec![T::zeros(); n];
        // SAFETY: ggml's blocks are `repr(C)` structs of f16 and byte arrays, for which every
        // bit pattern is a value; `data` has room for exactly `bytes.len()` bytes (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                data.as_mut_ptr().cast::<u8>(),
                bytes.len(),
            );
        }
        Ok(Self { rows, cols, data })
    }

    fn row_bytes(&self, rows: Range<usize>) -> Vec<u8> {
        let k = self.per_row();
        let blocks = &self.data[rows.start * k..rows.end * k];
        let n = std::mem::size_of_val(blocks);
        // SAFETY: the blocks are `repr(C)` plain data (see `from_bytes`), `n` bytes long.
        unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast::<u8>(), n) }.to_vec()
    }

    fn dequantize_row(&self, r: usize) -> Vec<f32> {
        let k = self.per_row();
        let mut out = vec![0f32; self.cols];
        T::to_float(&self.data[r * k..(r + 1) * k], &mut out);
        out
    }

    fn matmul_then<F>(&self, x: &[f32], m: usize, then: F) -> Vec<f32>
    where
        F: Fn(usize, f32) -> f32 + Sync + Send,
    {
        let (cols, k) = (self.cols, self.per_row());
        // Activations in the kernel's partner format (q8_0 for q4_0, q8_K for q4_K), once.
        let kx = cols / T::VecDotType::BLCK_SIZE;
        let mut xq = vec![T::VecDotType::zeros(); m * kx];
        for (xi, qi) in x.chunks_exact(cols).zip(xq.chunks_exact_mut(kx)) {
            T::VecDotType::from_float(xi, qi);
        }
        crate::parallel::by_output_rows(self.rows, m, 1, |range, out| {
            // Tiles of one row: no range runs past `rows`.
            for (j, o) in range.clone().enumerate() {
                let w = &self.data[o * k..(o + 1) * k];
                for (row, qi) in out.iter_mut().zip(xq.chunks_exact(kx)) {
                    row[j] = T::vec_dot(cols, w, qi);
                }
            }
            crate::parallel::apply(range.start, out, &then);
        })
    }
}
