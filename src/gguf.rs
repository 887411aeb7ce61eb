//! `model.gguf`: a model's weights pre-quantized in GGUF, the ggml ecosystem's container, with
//! llama.cpp's GPT-2 tensor names and metadata (architecture, sizes, the byte-level BPE's tokens
//! and merges), so the file also opens in llama.cpp and wllama. Written by `botcard convert`
//! ([`write`]); read as it arrives ([`GgufStream`]), each tensor made into what the model holds
//! once its bytes are in.
//!
//! The file is read and written by candle's `gguf_file` (header, metadata, alignment); this
//! module owns the names, what goes in the metadata, and which type each tensor is stored as.

use std::collections::HashMap;
use std::io::Cursor;
use std::ops::Range;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::files::{ModelFiles, GGUF};
use crate::ggml::GgmlMatrix;
use crate::model::{matrix_layout, Gpt2, Held, Layout, Matrix};
use crate::quant::{Dtype, Q8Matrix};
use crate::stream::Prepared;
use crate::weights::expected_tensors;

/// What a GGUF's weight matrices are stored as (`botcard convert --dtype`); vectors (biases,
/// layer norms) and the position embeddings stay f32, as llama.cpp keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    Q8_0,
    Q4_0,
    Q4K,
}

impl FileType {
    /// Every type.
    pub const ALL: [FileType; 3] = [Self::Q8_0, Self::Q4_0, Self::Q4K];

    /// The name `botcard convert --dtype` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Q8_0 => "q8_0",
            Self::Q4_0 => "q4_0",
            Self::Q4K => "q4k",
        }
    }

    fn ggml(self) -> GgmlDType {
        match self {
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4_0 => GgmlDType::Q4_0,
            Self::Q4K => GgmlDType::Q4K,
        }
    }

    /// llama.cpp's `general.file_type` (`llama_ftype`): MOSTLY_Q8_0, Q4_0, Q4_K_S.
    fn llama_ftype(self) -> u32 {
        match self {
            Self::Q8_0 => 7,
            Self::Q4_0 => 2,
            Self::Q4K => 14,
        }
    }

    /// The type a matrix with rows of `cols` values is stored as: this one where its blocks fit
    /// the rows, else q8_0 (32-value blocks), else f16 — as llama.cpp falls back.
    fn for_cols(self, cols: usize) -> GgmlDType {
        [self.ggml(), GgmlDType::Q8_0, GgmlDType::F16]
            .into_iter()
            .find(|t| cols.is_multiple_of(t.block_size()))
            .expect("f16 blocks are one value")
    }
}

/// HF's names within a block and llama.cpp's.
const BLOCK_NAMES: [(&str, &str); 12] = [
    ("ln_1.weight", "attn_norm.weight"),
    ("ln_1.bias", "attn_norm.bias"),
    ("attn.c_attn.weight", "attn_qkv.weight"),
    ("attn.c_attn.bias", "attn_qkv.bias"),
    ("attn.c_proj.weight", "attn_output.weight"),
    ("attn.c_proj.bias", "attn_output.bias"),
    ("ln_2.weight", "ffn_norm.weight"),
    ("ln_2.bias", "ffn_norm.bias"),
    ("mlp.c_fc.weight", "ffn_up.weight"),
    ("mlp.c_fc.bias", "ffn_up.bias"),
    ("mlp.c_proj.weight", "ffn_down.weight"),
    ("mlp.c_proj.bias", "ffn_down.bias"),
];

/// HF's names outside the blocks and llama.cpp's.
const TOP_NAMES: [(&str, &str); 5] = [
    ("wte.weight", "token_embd.weight"),
    ("wpe.weight", "position_embd.weight"),
    ("ln_f.weight", "output_norm.weight"),
    ("ln_f.bias", "output_norm.bias"),
    ("lm_head.weight", "output.weight"),
];

/// llama.cpp's name for the HF tensor `hf` (without `transformer.`).
pub fn gguf_name(hf: &str) -> Option<String> {
    if let Some((_, g)) = TOP_NAMES.iter().find(|(h, _)| *h == hf) {
        return Some((*g).to_owned());
    }
    let (layer, rest) = hf.strip_prefix("h.")?.split_once('.')?;
    let (_, g) = BLOCK_NAMES.iter().find(|(h, _)| *h == rest)?;
    Some(format!("blk.{}.{g}", layer.parse::<usize>().ok()?))
}

/// The HF name of llama.cpp's tensor `g`.
pub fn hf_name(g: &str) -> Option<String> {
    if let Some((h, _)) = TOP_NAMES.iter().find(|(_, n)| *n == g) {
        return Some((*h).to_owned());
    }
    let (layer, rest) = g.strip_prefix("blk.")?.split_once('.')?;
    let (h, _) = BLOCK_NAMES.iter().find(|(_, n)| *n == rest)?;
    Some(format!("h.{}.{h}", layer.parse::<usize>().ok()?))
}

/// The shape a GGUF stores HF's tensor `hf` of shape `hf_shape` in (row-major): matrices
/// [out, in], so HF's Conv1D weights ([in, out]) reversed.
fn file_shape(hf: &str, hf_shape: &[usize]) -> Vec<usize> {
    match matrix_layout(hf) {
        Some(Layout::InOut) => hf_shape.iter().rev().copied().collect(),
        _ => hf_shape.to_vec(),
    }
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Weights {
        file: GGUF,
        reason: reason.into(),
    }
}

/// `model.gguf` bytes for the model in `files`, its matrices stored as `ty`.
pub fn write(files: &ModelFiles, ty: FileType) -> Result<Vec<u8>> {
    let cfg = Config::from_json(files.config()?)?;
    let weights = files.weights()?;
    let cpu = &Device::Cpu;
    let expected = expected_tensors(&cfg);
    // [out, in] as llama.cpp stores every matrix (HF's Conv1D layers are [in, out]).
    let tensor = |hf: &str, shape: &[usize]| -> Result<Tensor> {
        let t = weights.get(hf, shape, cpu)?;
        Ok(match matrix_layout(hf) {
            Some(Layout::InOut) => t.t()?.contiguous()?,
            _ => t,
        })
    };
    let outs = expected
        .iter()
        .map(|(hf, shape)| {
            let shape = file_shape(hf, shape);
            let dtype = match (matrix_layout(hf), &shape[..]) {
                (Some(_), &[_, cols]) => ty.for_cols(cols),
                _ => GgmlDType::F32,
            };
            TensorOut::new(hf, dtype, shape)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut out = Vec::new();
    write_to(
        &metadata(&cfg, Some(files), Some(ty))?,
        &outs,
        |i| {
            let (hf, shape) = &expected[i];
            let t = tensor(hf, shape)?;
            Ok(match outs[i].dtype {
                // Our quantizer (ggml's rule), so a converted file holds exactly what
                // quantizing at load would.
                GgmlDType::Q8_0 => {
                    let (rows, cols) = t.dims2()?;
                    let values = t.flatten_all()?.to_vec1::<f32>()?;
                    Q8Matrix::quantize(&values, rows, cols)?.ggml_rows(0..rows)
                }
                other => QTensor::quantize(&t, other)?.data()?.into_owned(),
            })
        },
        &mut |piece| {
            out.extend_from_slice(piece);
            Ok(())
        },
    )?;
    Ok(out)
}

/// `model`'s weights as they are held (q8_0, 4-bit, f32), as a GGUF file made one piece at a
/// time as its reader asks ([`HeldFile::piece`]): what the page caches after quantizing a
/// checkpoint at load, so a second visit reads the quantized weights instead of the checkpoint.
/// Its metadata has the architecture and no tokenizer (the tokenizer's own file is cached beside
/// it). A piece is the header or up to [`PIECE_BYTES`] of one tensor's rows, so neither the file
/// nor its largest tensor is ever in memory a second time: wasm memory never shrinks, and a
/// whole copy of `wte` made here would stay in the tab for good.
pub struct HeldFile {
    /// HF names, in file order.
    names: Vec<String>,
    tensors: Vec<TensorOut>,
    header: Vec<u8>,
    /// The pieces after the header, in file order: a tensor's index and a range of its rows
    /// (its first dimension).
    pieces: Vec<(usize, Range<usize>)>,
}

/// The most bytes of a tensor in one piece of a [`HeldFile`] (one row at least).
pub const PIECE_BYTES: usize = 1 << 20;

impl HeldFile {
    /// The layout of `model`'s file.
    pub fn of(model: &Gpt2) -> Result<Self> {
        let cfg = model.config();
        let expected = expected_tensors(cfg);
        let tensors = expected
            .iter()
            .map(|(hf, shape)| match held(model, hf)? {
                Held::Vector(_) => TensorOut::new(hf, GgmlDType::F32, shape.clone()),
                Held::Matrix(m) => {
                    let (rows, cols) = m.dims()?;
                    TensorOut::new(hf, m.ggml_dtype(), vec![rows, cols])
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let mut pieces = Vec::new();
        for (i, t) in tensors.iter().enumerate() {
            let rows = t.rows();
            let step = (PIECE_BYTES / t.row_bytes().max(1)).max(1);
            pieces.extend(
                (0..rows)
                    .step_by(step)
                    .map(|r| (i, r..(r + step).min(rows))),
            );
        }
        Ok(Self {
            header: header(&metadata(cfg, None, None)?, &tensors)?,
            names: expected.into_iter().map(|(hf, _)| hf).collect(),
            tensors,
            pieces,
        })
    }

    /// The file's length in bytes.
    pub fn byte_len(&self) -> usize {
        self.header.len() + self.tensors.iter().map(|t| padded(t.bytes)).sum::<usize>()
    }

    /// How many pieces the file has: the header, then each tensor's in turn.
    pub fn pieces(&self) -> usize {
        1 + self.pieces.len()
    }

    /// Piece `i` of the file, made from `model` (the one it was laid out from); a tensor's last
    /// piece ends with its padding.
    pub fn piece(&self, model: &Gpt2, i: usize) -> Result<Vec<u8>> {
        let Some((n, rows)) = i.checked_sub(1).and_then(|p| self.pieces.get(p)) else {
            return Ok(if i == 0 {
                self.header.clone()
            } else {
                Vec::new()
            });
        };
        let t = &self.tensors[*n];
        let bytes = match held(model, &self.names[*n])? {
            Held::Vector(v) => crate::dense::with_values(v, |values| {
                let per_row = values.len() / t.rows().max(1);
                f32_bytes(&values[rows.start * per_row..rows.end * per_row])
            })?,
            Held::Matrix(m) => m.ggml_bytes(rows.clone())?,
        };
        rows_data(t, rows.clone(), bytes)
    }
}

fn held<'m>(model: &'m Gpt2, hf: &str) -> Result<Held<'m>> {
    model
        .held(hf)
        .ok_or_else(|| Error::Parameter(format!("the model holds no `{hf}`")))
}

/// Writes [`HeldFile`] whole to `sink`, piece by piece.
pub fn write_held(model: &Gpt2, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let file = HeldFile::of(model)?;
    (0..file.pieces()).try_for_each(|i| sink(&file.piece(model, i)?))
}

/// Little-endian bytes of f32 values.
pub(crate) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The alignment of the data section and of each tensor in it (GGUF's default).
const ALIGN: usize = 32;

/// One tensor of a file being written.
struct TensorOut {
    /// llama.cpp's name.
    name: String,
    dtype: GgmlDType,
    /// Row-major: [out, in] for a matrix.
    shape: Vec<usize>,
    bytes: usize,
}

impl TensorOut {
    /// Its rows: the first dimension (1 for a scalar).
    fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// The bytes of one row.
    fn row_bytes(&self) -> usize {
        self.bytes / self.rows().max(1)
    }

    fn new(hf: &str, dtype: GgmlDType, shape: Vec<usize>) -> Result<Self> {
        let elems: usize = shape.iter().product();
        if !elems.is_multiple_of(dtype.block_size()) {
            return Err(bad(format!("`{hf}` does not fill {dtype:?} blocks")));
        }
        Ok(Self {
            name: gguf_name(hf).ok_or_else(|| bad(format!("`{hf}` has no llama.cpp name")))?,
            dtype,
            bytes: elems / dtype.block_size() * dtype.type_size(),
            shape,
        })
    }
}

/// GGUF's number for a tensor type (ggml's `ggml_type`).
fn type_id(t: GgmlDType) -> Result<u32> {
    Ok(match t {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q8_0 => 8,
        GgmlDType::Q4K => 12,
        GgmlDType::BF16 => 30,
        other => return Err(bad(format!("{other:?} tensors are not written"))),
    })
}

/// Writes a GGUF (version 3) file: the header with `metadata` and `tensors`, then each
/// tensor's bytes (`data(i)`, asked for one at a time), each piece handed to `sink` as it is
/// made. Ours rather than candle's `gguf_file::write`, which needs every tensor in memory at
/// once as a copy; candle's reader checks what this writes (tests/gguf.rs).
fn write_to(
    metadata: &[(&str, Value)],
    tensors: &[TensorOut],
    mut data: impl FnMut(usize) -> Result<Vec<u8>>,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    sink(&header(metadata, tensors)?)?;
    for (i, t) in tensors.iter().enumerate() {
        sink(&padded_data(t, data(i)?)?)?;
    }
    Ok(())
}

fn padded(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// A GGUF (version 3) header with `metadata` and `tensors`, padded to where the data starts.
fn header(metadata: &[(&str, Value)], tensors: &[TensorOut]) -> Result<Vec<u8>> {
    let mut h = Vec::new();
    h.extend_from_slice(b"GGUF");
    h.extend_from_slice(&3u32.to_le_bytes());
    h.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    h.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_string(&mut h, key);
        h.extend_from_slice(&value_type(value).to_le_bytes());
        put_value(&mut h, value)?;
    }
    let mut offset = 0usize;
    for t in tensors {
        put_string(&mut h, &t.name);
        h.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for &d in t.shape.iter().rev() {
            h.extend_from_slice(&(d as u64).to_le_bytes());
        }
        h.extend_from_slice(&type_id(t.dtype)?.to_le_bytes());
        h.extend_from_slice(&(offset as u64).to_le_bytes());
        offset += padded(t.bytes);
    }
    h.resize(padded(h.len()), 0);
    Ok(h)
}

/// A tensor's bytes as the file holds them: checked against its size, padded to the alignment.
fn padded_data(t: &TensorOut, bytes: Vec<u8>) -> Result<Vec<u8>> {
    rows_data(t, 0..t.rows(), bytes)
}

/// Rows `rows` of a tensor's bytes as the file holds them: checked against their size, and
/// padded to the alignment when they end the tensor.
fn rows_data(t: &TensorOut, rows: Range<usize>, mut bytes: Vec<u8>) -> Result<Vec<u8>> {
    let want = if rows.len() == t.rows() {
        t.bytes
    } else {
        t.row_bytes() * rows.len()
    };
    if bytes.len() != want {
        return Err(bad(format!(
            "`{}`: {} bytes, not {want}",
            t.name,
            bytes.len()
        )));
    }
    if rows.end == t.rows() {
        // Exactly: a Vec grown past its capacity doubles it, a tensor's size more for a moment.
        let pad = padded(t.bytes) - t.bytes;
        bytes.reserve_exact(pad);
        bytes.resize(bytes.len() + pad, 0);
    }
    Ok(bytes)
}

fn put_string(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

/// GGUF's number for a metadata value's type.
fn value_type(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_value(h: &mut Vec<u8>, v: &Value) -> Result<()> {
    match v {
        Value::U8(x) => h.push(*x),
        Value::I8(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => h.push(u8::from(*x)),
        Value::String(s) => put_string(h, s),
        Value::Array(items) => {
            let t = items.first().map_or(value_type(&Value::U32(0)), value_type);
            if items.iter().any(|i| value_type(i) != t) {
                return Err(bad("a metadata array mixes value types"));
            }
            h.extend_from_slice(&t.to_le_bytes());
            h.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                put_value(h, i)?;
            }
        }
    }
    Ok(())
}

/// The metadata llama.cpp's GPT-2 loader reads: architecture, sizes, the file type (`ty`) and
/// the tokenizer of `files` (each when given).
fn metadata(
    cfg: &Config,
    files: Option<&ModelFiles>,
    ty: Option<FileType>,
) -> Result<Vec<(&'static str, Value)>> {
    let u32_of = |n: usize| Value::U32(u32::try_from(n).unwrap_or(u32::MAX));
    let mut m = vec![
        ("general.architecture", Value::String("gpt2".into())),
        ("general.name", Value::String("botcard".into())),
        ("gpt2.context_length", u32_of(cfg.n_positions)),
        ("gpt2.embedding_length", u32_of(cfg.n_embd)),
        ("gpt2.feed_forward_length", u32_of(cfg.n_inner)),
        ("gpt2.block_count", u32_of(cfg.n_layer)),
        ("gpt2.attention.head_count", u32_of(cfg.n_head)),
        (
            "gpt2.attention.layer_norm_epsilon",
            Value::F32(cfg.layer_norm_epsilon as f32),
        ),
    ];
    if let Some(ty) = ty {
        m.push(("general.file_type", Value::U32(ty.llama_ftype())));
        m.push(("general.quantization_version", Value::U32(2)));
    }
    let Some(files) = files else {
        return Ok(m);
    };
    let (tokens, merges) = tokenizer_lists(files)?;
    let eos = cfg.eos_token_id;
    let token_type = (0..tokens.len())
        .map(|i| {
            // 3 = CONTROL for the end-of-text token, 1 = NORMAL.
            Value::I32(if Some(i as u32) == eos { 3 } else { 1 })
        })
        .collect();
    m.extend([
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("gpt-2".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.token_type", Value::Array(token_type)),
        (
            "tokenizer.ggml.merges",
            Value::Array(merges.into_iter().map(Value::String).collect()),
        ),
    ]);
    if let Some(b) = cfg.bos_token_id {
        m.push(("tokenizer.ggml.bos_token_id", Value::U32(b)));
    }
    if let Some(e) = eos {
        m.push(("tokenizer.ggml.eos_token_id", Value::U32(e)));
    }
    Ok(m)
}

/// The tokenizer's tokens in id order and its merges as "a b", from its `tokenizer.json` form.
fn tokenizer_lists(files: &ModelFiles) -> Result<(Vec<String>, Vec<String>)> {
    let json = files.tokenizer()?.to_json()?;
    let bad_json = |what: &str| Error::Tokenizer {
        file: "tokenizer",
        reason: format!("its JSON form has no {what}"),
    };
    let v: serde_json::Value = serde_json::from_str(&json).map_err(|_| bad_json("valid JSON"))?;
    let vocab = v["model"]["vocab"]
        .as_object()
        .ok_or_else(|| bad_json("model.vocab"))?;
    let mut tokens = vec![String::new(); vocab.len()];
    for (token, id) in vocab {
        let id = id.as_u64().and_then(|i| usize::try_from(i).ok());
        let slot = id
            .and_then(|i| tokens.get_mut(i))
            .ok_or_else(|| bad_json("dense token ids"))?;
        slot.clone_from(token);
    }
    for added in v["added_tokens"].as_array().into_iter().flatten() {
        if let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) {
            let id = usize::try_from(id).map_err(|_| bad_json("dense token ids"))?;
            if id >= tokens.len() {
                tokens.resize(id + 1, String::new());
            }
            tokens[id] = content.to_owned();
        }
    }
    let merges = v["model"]["merges"]
        .as_array()
        .ok_or_else(|| bad_json("model.merges"))?
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(p) => {
                Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?))
            }
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad_json("merges as pairs"))?;
    Ok((tokens, merges))
}

/// A tensor as the model holds it.
enum Made {
    /// A vector or the position embeddings, in f32 (HF's shape `hf_shape`).
    Vector(Tensor),
    Matrix(Matrix),
}

/// Tensor `e` from its bytes, as the model holds it: matrices in `dtype` where the file stores
/// them unquantized, as stored where it quantized them (dequantized if `dtype` is f32).
fn make(e: &Entry, data: &[u8], dtype: Dtype, hf_shape: &[usize]) -> Result<Made> {
    let cpu = &Device::Cpu;
    let dequantized = || -> Result<Tensor> {
        let n = e.shape.iter().product();
        let values = crate::ggml::dequantize(e.dtype, data, n)?;
        Ok(Tensor::from_vec(values, e.shape.clone(), cpu)?)
    };
    if matrix_layout(&e.name).is_none() {
        return Ok(Made::Vector(dequantized()?.reshape(hf_shape)?));
    }
    if let Some(stored) = crate::ggml::float_dtype(e.dtype) {
        let m = Matrix::from_raw(data, stored, &e.shape, Layout::OutIn, dtype)?;
        return Ok(Made::Matrix(m));
    }
    let (rows, cols) = (e.shape[0], e.shape[1]);
    let keep = dtype != Dtype::F32;
    Ok(Made::Matrix(match e.dtype {
        GgmlDType::Q8_0 if keep => {
            Matrix::Q8(Arc::new(Q8Matrix::from_ggml_bytes(rows, cols, data)?))
        }
        other => match GgmlMatrix::from_bytes(other, rows, cols, data)? {
            Some(g) if keep => Matrix::Ggml(Arc::new(g)),
            _ => Matrix::new(dequantized()?, dtype)?,
        },
    }))
}

/// The largest header (metadata and tensor list) accepted: GPT-2's tokenizer takes about 2 MB.
const MAX_HEADER: usize = 64 << 20;
/// The most room [`GgufStream`] makes ahead of a tensor's bytes: more than a 124M's f32
/// embedding matrix (154 MB).
const RESERVE_AHEAD: usize = 256 << 20;

/// One tensor of the file that the model needs.
struct Entry {
    /// HF's name.
    name: String,
    dtype: GgmlDType,
    /// Row-major, as candle reads it: [out, in] for a matrix.
    shape: Vec<usize>,
    /// Offsets in the data section.
    begin: usize,
    end: usize,
}

/// `model.gguf`, read as it arrives.
pub struct GgufStream {
    expected: HashMap<String, Vec<usize>>,
    tied: bool,
    dtype: Dtype,
    /// Bytes received and not yet used; `buf[0]` is at `offset` in the file.
    buf: Vec<u8>,
    offset: usize,
    /// The buffer's length at the last attempt to parse the header: the next waits until it has
    /// doubled, so a header that arrives in many small pieces is parsed a few times rather than
    /// once per piece (a quadratic hang on a large header, found by fuzzing).
    tried: usize,
    /// Why the last attempt failed: what a file that ends before its header is reported with.
    failed: Option<String>,
    /// Where the data section starts, and the needed tensors in file order, once the header is in.
    header: Option<(usize, Vec<Entry>)>,
    next: usize,
    tensors: HashMap<String, Tensor>,
    matrices: HashMap<String, Matrix>,
}

impl GgufStream {
    /// A reader for the weights of a model with `cfg`, its matrices held as `dtype` where the
    /// file stores them unquantized (a quantized matrix is kept as stored unless `dtype` is f32).
    pub fn new(cfg: &Config, dtype: Dtype) -> Self {
        Self {
            expected: expected_tensors(cfg).into_iter().collect(),
            tied: cfg.tie_word_embeddings,
            dtype,
            buf: Vec::new(),
            offset: 0,
            tried: 0,
            failed: None,
            header: None,
            next: 0,
            tensors: HashMap::new(),
            matrices: HashMap::new(),
        }
    }

    /// Takes the next bytes of the file.
    pub fn push(&mut self, bytes: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.header.is_none() && !self.read_header()? {
            return Ok(());
        }
        let (start, entries) = self.header.take().expect("read above");
        let result = self.take_tensors(start, &entries);
        self.header = Some((start, entries));
        result
    }

    /// Makes every tensor whose bytes are all in, in file order, and drops those bytes.
    fn take_tensors(&mut self, start: usize, entries: &[Entry]) -> Result<()> {
        // File position up to which the buffer's bytes are used; they are dropped once, at the
        // end (dropping after each tensor would move a whole-file buffer once per tensor).
        let mut used = self.offset;
        while let Some(e) = entries.get(self.next) {
            let (begin, end) = (start + e.begin, start + e.end);
            if self.offset + self.buf.len() < end {
                break;
            }
            // Bytes before the tensor (padding, tensors the model does not use) are skipped.
            let data = &self.buf[begin - self.offset..end - self.offset];
            match make(e, data, self.dtype, &self.expected[&e.name])? {
                Made::Vector(t) => {
                    self.tensors.insert(e.name.clone(), t);
                }
                Made::Matrix(m) => {
                    self.matrices.insert(e.name.clone(), m);
                }
            }
            self.next += 1;
            used = end;
        }
        if let Some(e) = entries.get(self.next) {
            used = used.max(start + e.begin);
        }
        let drop = used.saturating_sub(self.offset).min(self.buf.len());
        self.buf.drain(..drop);
        self.offset += drop;
        // The next tensor's bytes arrive in pieces: room for all of them at once, rather than a
        // buffer that doubles and copies itself (an embedding matrix is most of a small model).
        // Only a hint, and at most RESERVE_AHEAD: a header may lie about sizes it never sends.
        if let Some(e) = entries.get(self.next) {
            let need = (start + e.end).saturating_sub(self.offset + self.buf.len());
            let _ = self.buf.try_reserve_exact(need.min(RESERVE_AHEAD));
        }
        Ok(())
    }

    /// Parses the header once all of it is in; false while it is not.
    fn read_header(&mut self) -> Result<bool> {
        if self.buf.len() >= 4 && &self.buf[..4] != b"GGUF" {
            return Err(bad("not a GGUF file (it does not start with GGUF)"));
        }
        if self.buf.len() < 2 * self.tried {
            return Ok(false);
        }
        let content = match gguf_file::Content::read(&mut Cursor::new(&self.buf)) {
            Ok(c) => c,
            // Most likely the header is not all in yet ([`Self::finish`] reports the error
            // of a file that ends here).
            Err(e) if self.buf.len() < MAX_HEADER => {
                self.tried = self.buf.len();
                self.failed = Some(e.to_string());
                return Ok(false);
            }
            Err(e) => return Err(bad(format!("not a valid GGUF file ({e})"))),
        };
        let start = usize::try_from(content.tensor_data_offset)
            .map_err(|_| bad("its data starts beyond what this machine can address"))?;
        let mut entries = Vec::new();
        for (g, info) in &content.tensor_infos {
            let Some(name) = hf_name(g) else { continue };
            if name == "lm_head.weight" && self.tied {
                continue; // llama.cpp's converter may store the tied matrix twice
            }
            let Some(want) = self.expected.get(&name) else {
                continue;
            };
            let shape = info.shape.dims().to_vec();
            if file_shape(&name, want) != shape {
                return Err(Error::Shape {
                    file: GGUF,
                    name: g.clone(),
                    expected: want.clone(),
                    got: shape,
                });
            }
            let elems = info.shape.elem_count();
            let (bs, ts) = (info.ggml_dtype.block_size(), info.ggml_dtype.type_size());
            if !elems.is_multiple_of(bs) {
                return Err(bad(format!(
                    "`{g}`: {elems} values do not fill {:?} blocks",
                    info.ggml_dtype
                )));
            }
            let begin = usize::try_from(info.offset).map_err(|_| bad(format!("`{g}`: offset")))?;
            let end = begin
                .checked_add(elems / bs * ts)
                .ok_or_else(|| bad(format!("`{g}`: offset")))?;
            entries.push(Entry {
                name,
                dtype: info.ggml_dtype,
                shape,
                begin,
                end,
            });
        }
        entries.sort_by_key(|e| e.begin);
        if entries.windows(2).any(|w| w[1].begin < w[0].end) {
            return Err(bad("two tensors overlap"));
        }
        self.header = Some((start, entries));
        Ok(true)
    }

    /// The weights, once every needed tensor has arrived.
    pub fn finish(mut self) -> Result<Prepared> {
        if self.header.is_none() {
            // The last bytes may have completed the header since the last attempt.
            self.tried = 0;
            self.push(&[])?;
        }
        let header = self.header.as_ref().map(|(_, entries)| entries);
        let failed = self.failed.take();
        Prepared::complete(
            GGUF,
            &self.expected,
            self.tensors,
            self.matrices,
            header.map(|entries| move |name: &str| entries.iter().any(|e| e.name == name)),
            || match &failed {
                Some(e) => bad(format!("not a valid GGUF file ({e})")),
                None => bad("the file ends before its header"),
            },
            |name| gguf_name(name).unwrap_or_else(|| name.to_owned()),
        )
    }
}
