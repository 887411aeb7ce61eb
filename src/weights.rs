//! Checkpoint tensors from bytes: `model.safetensors`, or the zip that `torch.save` writes as
//! `pytorch_model.bin`. Nothing touches a file system, so the same code runs in a browser.
//!
//! Names are normalised to GPT-2's own keys (`wte.weight`, `h.0.attn.c_attn.weight`, …): the
//! `transformer.` prefix of `GPT2LMHeadModel` checkpoints is dropped, `lm_head.weight` kept.
//! Tensors stay in the checkpoint's layout (HF Conv1D weights are [in, out]); the model
//! transposes. Data is read only when a tensor is asked for with the shape the config implies,
//! so a header that declares a huge tensor is refused before anything is allocated.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use candle_core::{DType, Device, Tensor};
use safetensors::SafeTensors;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::files::{PYTORCH, SAFETENSORS};
use crate::pickle::{self, StorageType, TensorRef};

enum Source<'a> {
    Safetensors(SafeTensors<'a>, HashMap<String, String>),
    Pytorch {
        zip: std::cell::RefCell<zip::ZipArchive<Cursor<&'a [u8]>>>,
        /// Zip entry name of `data.pkl`'s folder (`archive/`, `pytorch_model/`, …).
        dir: String,
        tensors: HashMap<String, TensorRef>,
    },
}

/// The tensors of one checkpoint, borrowed from its bytes.
pub struct Weights<'a> {
    source: Source<'a>,
    file: &'static str,
}

/// `transformer.h.0.ln_1.weight` -> `h.0.ln_1.weight`.
fn normalise(name: &str) -> String {
    name.strip_prefix("transformer.").unwrap_or(name).to_owned()
}

impl<'a> Weights<'a> {
    /// Reads the header of a `model.safetensors`.
    pub fn from_safetensors(bytes: &'a [u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Weights {
            file: SAFETENSORS,
            reason: format!("not a valid safetensors file ({e})"),
        })?;
        let names = st
            .names()
            .into_iter()
            .map(|n| (normalise(n), n.to_owned()))
            .collect();
        Ok(Self {
            source: Source::Safetensors(st, names),
            file: SAFETENSORS,
        })
    }

    /// Reads the zip directory and the pickled state dict of a `pytorch_model.bin`.
    pub fn from_pytorch(bytes: &'a [u8]) -> Result<Self> {
        let bad = |reason: String| Error::Weights {
            file: PYTORCH,
            reason,
        };
        if bytes.starts_with(&LEGACY_MAGIC) {
            return Err(bad(LEGACY.into()));
        }
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| bad(format!("not a torch.save zip archive ({e})")))?;
        let pkl_name = zip
            .file_names()
            .filter_map(|n| n.ok())
            .find(|n| n.ends_with("data.pkl"))
            .map(|n| n.into_owned())
            .ok_or_else(|| bad("the archive has no data.pkl".into()))?;
        let dir = pkl_name
            .strip_suffix("data.pkl")
            .unwrap_or_default()
            .to_owned();
        if let Ok(mut f) = zip.by_name(&format!("{dir}byteorder")) {
            let mut order = Vec::new();
            f.by_ref().take(16).read_to_end(&mut order).ok();
            check_byteorder(&order).map_err(bad)?;
        }
        let pkl = read_entry(&mut zip, &pkl_name, bytes.len()).map_err(bad)?;
        let tensors = state_dict(&pkl).map_err(bad)?;
        Ok(Self {
            source: Source::Pytorch {
                zip: zip.into(),
                dir,
                tensors,
            },
            file: PYTORCH,
        })
    }

    /// The tensor `name` as f32, after checking that its shape is `shape`.
    pub fn get(&self, name: &str, shape: &[usize], device: &Device) -> Result<Tensor> {
        let missing = || Error::MissingTensor {
            file: self.file,
            name: name.to_owned(),
        };
        let wrong_shape = |got: &[usize]| Error::Shape {
            file: self.file,
            name: name.to_owned(),
            expected: shape.to_vec(),
            got: got.to_vec(),
        };
        let bad = |reason: String| Error::Weights {
            file: self.file,
            reason: format!("tensor `{name}`: {reason}"),
        };
        match &self.source {
            Source::Safetensors(st, names) => {
                let view = st
                    .tensor(names.get(name).ok_or_else(missing)?)
                    .map_err(|e| bad(e.to_string()))?;
                if view.shape() != shape {
                    return Err(wrong_shape(view.shape()));
                }
                let dtype = match view.dtype() {
                    safetensors::Dtype::F32 => DType::F32,
                    safetensors::Dtype::F16 => DType::F16,
                    safetensors::Dtype::BF16 => DType::BF16,
                    safetensors::Dtype::F64 => DType::F64,
                    other => {
                        return Err(bad(format!(
                            "dtype {other:?} is not a float type the model can use"
                        )))
                    }
                };
                Ok(Tensor::from_raw_buffer(view.data(), dtype, shape, device)?
                    .to_dtype(DType::F32)?)
            }
            Source::Pytorch { zip, dir, tensors } => {
                let t = tensors.get(name).ok_or_else(missing)?;
                if t.shape != shape {
                    return Err(wrong_shape(&t.shape));
                }
                let entry = format!("{dir}data/{}", t.storage_key);
                let limit = storage_bytes(t).map_err(bad)?;
                let raw = read_entry(&mut zip.borrow_mut(), &entry, limit).map_err(bad)?;
                storage_tensor(&raw, t)
                    .map_err(|e| bad(format!("{entry}: {e}")))?
                    .reshape(shape)
                    .map_err(Error::from)
            }
        }
    }
}

/// The sentence for a file in torch's pre-1.6 format, which starts with these bytes.
pub(crate) const LEGACY_MAGIC: [u8; 4] = [0x80, 0x02, 0x8a, 0x0a];
pub(crate) const LEGACY: &str = "this is torch's legacy (pre-1.6) format; re-save it with a newer \
    torch, or convert it to safetensors with HF transformers";

/// The tensors of a `data.pkl`, by normalised name.
pub(crate) fn state_dict(pkl: &[u8]) -> std::result::Result<HashMap<String, TensorRef>, String> {
    Ok(pickle::read_state_dict(pkl)
        .map_err(|e| format!("data.pkl: {e}"))?
        .into_iter()
        .map(|(name, t)| (normalise(&name), t))
        .collect())
}

/// Refuses a checkpoint whose `byteorder` entry says big-endian.
pub(crate) fn check_byteorder(entry: &[u8]) -> std::result::Result<(), String> {
    if String::from_utf8_lossy(entry).trim() == "big" {
        return Err("big-endian checkpoints are not supported".into());
    }
    Ok(())
}

/// The bytes of `t`'s storage (as the pickle declares it), once its view is checked to lie
/// within it and its type to be a float type the model can use.
pub(crate) fn storage_bytes(t: &TensorRef) -> std::result::Result<usize, String> {
    let size = element_size(t)?;
    let needed = last_index(t).ok_or_else(|| "strides overflow".to_owned())?;
    if needed > t.storage_len {
        return Err("the view reaches past its storage".into());
    }
    t.storage_len
        .checked_mul(size)
        .ok_or_else(|| "storage too large".into())
}

fn element_size(t: &TensorRef) -> std::result::Result<usize, String> {
    t.storage_type.size().ok_or_else(|| {
        format!(
            "storage type {:?} is not a float type the model can use",
            t.storage_type
        )
    })
}

/// The candle dtype of a float storage.
pub(crate) fn storage_dtype(t: &StorageType) -> Option<DType> {
    match t {
        StorageType::F32 => Some(DType::F32),
        StorageType::F16 => Some(DType::F16),
        StorageType::BF16 => Some(DType::BF16),
        StorageType::F64 => Some(DType::F64),
        StorageType::Other(_) => None,
    }
}

/// The f32 tensor (flat, contiguous) that `t` views in its storage's bytes `raw`.
pub(crate) fn storage_tensor(raw: &[u8], t: &TensorRef) -> std::result::Result<Tensor, String> {
    let size = element_size(t)?;
    let needed = last_index(t).ok_or_else(|| "strides overflow".to_owned())?;
    if raw.len() < needed * size {
        return Err(format!(
            "holds {} bytes, the tensor needs {}",
            raw.len(),
            needed * size
        ));
    }
    let dtype = storage_dtype(&t.storage_type).expect("a float storage has a size");
    let flat = || -> candle_core::Result<Tensor> {
        let storage =
            Tensor::from_raw_buffer(&raw[..needed * size], dtype, &[needed], &Device::Cpu)?
                .to_dtype(DType::F32)?;
        strided_view(&storage, t)
    };
    flat().map_err(|e| e.to_string())
}

/// Whether `t` is a contiguous, row-major view (its elements one run from `offset`).
pub(crate) fn is_contiguous(t: &TensorRef) -> bool {
    let mut expect = 1;
    for (&d, &s) in t.shape.iter().zip(&t.stride).rev() {
        if d != 1 && s != expect {
            return false;
        }
        expect *= d;
    }
    true
}

/// One past the largest storage index the view touches (0 for an empty tensor).
fn last_index(t: &TensorRef) -> Option<usize> {
    if t.shape.contains(&0) {
        return Some(0);
    }
    t.shape
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset + 1, |acc, (&d, &s)| {
            acc.checked_add((d - 1).checked_mul(s)?)
        })
}

/// Gathers a strided view of a flat f32 storage into a contiguous tensor.
fn strided_view(storage: &Tensor, t: &TensorRef) -> candle_core::Result<Tensor> {
    let numel: usize = t.shape.iter().product();
    if is_contiguous(t) {
        return storage.narrow(0, t.offset, numel);
    }
    let mut idx = Vec::with_capacity(numel);
    let mut pos = vec![0usize; t.shape.len()];
    for _ in 0..numel {
        idx.push((t.offset + pos.iter().zip(&t.stride).map(|(p, s)| p * s).sum::<usize>()) as u32);
        for d in (0..pos.len()).rev() {
            pos[d] += 1;
            if pos[d] < t.shape[d] {
                break;
            }
            pos[d] = 0;
        }
    }
    let idx = Tensor::from_vec(idx, numel, storage.device())?;
    storage.index_select(&idx, 0)
}

/// Reads a whole zip entry, refusing entries larger than `limit` bytes.
fn read_entry(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &str,
    limit: usize,
) -> std::result::Result<Vec<u8>, String> {
    let f = zip.by_name(name).map_err(|e| format!("{name}: {e}"))?;
    let size = usize::try_from(f.size()).unwrap_or(usize::MAX);
    if size > limit {
        return Err(format!(
            "{name} declares {size} bytes, more than its tensors need ({limit})"
        ));
    }
    let mut out = Vec::with_capacity(size);
    f.take(limit as u64)
        .read_to_end(&mut out)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(out)
}

/// The tensors of a GPT-2 with this config, by HF name (without `transformer.`), with the shapes
/// HF stores them in. `lm_head.weight` is listed only when it is not tied to `wte`.
pub fn expected_tensors(cfg: &Config) -> Vec<(String, Vec<usize>)> {
    let (e, i) = (cfg.n_embd, cfg.n_inner);
    let mut out = vec![
        ("wte.weight".to_owned(), vec![cfg.vocab_size, e]),
        ("wpe.weight".to_owned(), vec![cfg.n_positions, e]),
    ];
    for l in 0..cfg.n_layer {
        let p = |s: &str| format!("h.{l}.{s}");
        out.extend([
            (p("ln_1.weight"), vec![e]),
            (p("ln_1.bias"), vec![e]),
            (p("attn.c_attn.weight"), vec![e, 3 * e]),
            (p("attn.c_attn.bias"), vec![3 * e]),
            (p("attn.c_proj.weight"), vec![e, e]),
            (p("attn.c_proj.bias"), vec![e]),
            (p("ln_2.weight"), vec![e]),
            (p("ln_2.bias"), vec![e]),
            (p("mlp.c_fc.weight"), vec![e, i]),
            (p("mlp.c_fc.bias"), vec![i]),
            (p("mlp.c_proj.weight"), vec![i, e]),
            (p("mlp.c_proj.bias"), vec![e]),
        ]);
    }
    out.push(("ln_f.weight".to_owned(), vec![e]));
    out.push(("ln_f.bias".to_owned(), vec![e]));
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".to_owned(), vec![cfg.vocab_size, e]));
    }
    out
}

/// How `model.safetensors` stores its numbers: f16 halves the file (a trained bot to bundle);
/// the engine computes in f32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    F16,
}

/// Writes every tensor of the model as `model.safetensors` bytes with the key names
/// `GPT2LMHeadModel.save_pretrained` uses, so HF transformers loads the result.
pub fn to_safetensors(cfg: &Config, weights: &Weights, precision: Precision) -> Result<Vec<u8>> {
    let tensors = expected_tensors(cfg)
        .into_iter()
        .map(|(name, shape)| Ok((name.clone(), weights.get(&name, &shape, &Device::Cpu)?)))
        .collect::<Result<Vec<_>>>()?;
    serialize(&tensors, precision)
}

/// `model.safetensors` bytes from tensors named as in [`expected_tensors`], in HF's layout:
/// keys get `GPT2LMHeadModel`'s `transformer.` prefix (not `lm_head.weight`), and the metadata
/// says `format: pt`, which transformers requires.
pub fn serialize(tensors: &[(String, Tensor)], precision: Precision) -> Result<Vec<u8>> {
    let data = tensors
        .iter()
        .map(|(name, t)| {
            let key = if name.starts_with("lm_head.") {
                name.clone()
            } else {
                format!("transformer.{name}")
            };
            let flat = t.flatten_all()?;
            let bytes: Vec<u8> = match precision {
                Precision::F32 => flat
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                Precision::F16 => flat
                    .to_dtype(DType::F16)?
                    .to_vec1::<half::f16>()?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            };
            Ok((key, bytes, t.dims().to_vec()))
        })
        .collect::<Result<Vec<_>>>()?;
    let dtype = match precision {
        Precision::F32 => safetensors::Dtype::F32,
        Precision::F16 => safetensors::Dtype::F16,
    };
    let views = data.iter().map(|(k, bytes, shape)| {
        let view = safetensors::tensor::TensorView::new(dtype, shape.clone(), bytes)
            .expect("data of its own shape and dtype");
        (k.clone(), view)
    });
    let metadata = Some(HashMap::from([("format".to_owned(), "pt".to_owned())]));
    safetensors::serialize(views, metadata).map_err(|e| Error::Weights {
        file: SAFETENSORS,
        reason: e.to_string(),
    })
}
