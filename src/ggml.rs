//! Weight matrices as a pre-quantized GGUF file stores them: the 4-bit formats `botcard
//! convert` writes (q4_0, q4_K), held and multiplied by [`crate::q4`]; tensors of the other
//! types a GGUF may hold are dequantized ([`dequantize`]).

use std::ops::Range;

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType,
};
use candle_core::quantized::GgmlDType;
use candle_core::DType;

use crate::error::{Error, Result};
use crate::q4::{Q4KMatrix, Q4_0Matrix};

/// A weight matrix W [out, in] in a 4-bit ggml format.
pub enum GgmlMatrix {
    Q4_0(Q4_0Matrix),
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
            GgmlDType::Q4_0 => Some(Self::Q4_0(Q4_0Matrix::from_ggml_bytes(rows, cols, bytes)?)),
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
            Self::Q4_0(b) => b.ggml_rows(rows),
            Self::Q4K(b) => b.ggml_rows(rows),
        }
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        match self {
            Self::Q4_0(b) => b.rows(),
            Self::Q4K(b) => b.rows(),
        }
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        match self {
            Self::Q4_0(b) => b.cols(),
            Self::Q4K(b) => b.cols(),
        }
    }

    /// Bytes held.
    pub fn byte_size(&self) -> usize {
        match self {
            Self::Q4_0(b) => b.byte_size(),
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
        let blocks = read_blocks::<T>(n, bytes)?;
        let mut out = vec![0f32; n];
        T::to_float(&blocks, &mut out);
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

/// `n` values' ggml blocks of type `T`, read from `bytes`.
fn read_blocks<T: GgmlType>(n: usize, bytes: &[u8]) -> Result<Vec<T>> {
    let count = n / T::BLCK_SIZE;
    if !n.is_multiple_of(T::BLCK_SIZE) || bytes.len() != count * std::mem::size_of::<T>() {
        return Err(Error::Parameter(format!(
            "{:?} data of {} bytes does not hold {n} values",
            T::DTYPE,
            bytes.len()
        )));
    }
    let mut data = vec![T::zeros(); count];
    // SAFETY: ggml's blocks are `repr(C)` structs of f16 and byte arrays, for which every bit
    // pattern is a value; `data` has room for exactly `bytes.len()` bytes (checked above).
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), data.as_mut_ptr().cast::<u8>(), bytes.len());
    }
    Ok(data)
}
