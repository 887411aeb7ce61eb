//! Loading a bot as its files arrive: `model.safetensors` is read piece by piece, and each tensor
//! becomes what the model holds (q8_0 or f32 matrices, f32 vectors) as soon as its bytes are in —
//! `wte` (the largest) row by row — and those bytes are then dropped. A load never holds the whole weights file, so a tab needs little
//! more memory than the model itself, and quantizing overlaps the download.
//!
//! The header is parsed here rather than by the `safetensors` crate, whose reader wants the whole
//! file; the checks are the same (offsets in order, within the data, of the declared size), and a
//! tensor is refused before any of its bytes are kept when its shape disagrees with the config.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::files::{self, ModelFiles, SAFETENSORS};
use crate::gguf::GgufStream;
use crate::model::{matrix_layout, Layout, Matrix, MatrixRows, TensorSource};
use crate::quant::Dtype;
use crate::torch_stream::TorchStream;
use crate::weights::expected_tensors;
use crate::{Bot, Tokenizer};

/// The largest header accepted, as the `safetensors` crate allows.
const MAX_HEADER: usize = 100_000_000;

fn bad(reason: impl Into<String>) -> Error {
    Error::Weights {
        file: SAFETENSORS,
        reason: reason.into(),
    }
}

/// One tensor of the header that the model needs.
struct Entry {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    /// Offsets in the data section.
    begin: usize,
    end: usize,
}

/// `model.safetensors`, read as it arrives.
pub struct SafetensorsStream {
    expected: HashMap<String, Vec<usize>>,
    dtype: Dtype,
    /// Bytes received and not yet used; `buf[0]` is at `offset` in the file.
    buf: Vec<u8>,
    offset: usize,
    /// Where the data section starts, and the needed tensors by position, once the header is in.
    header: Option<(usize, Vec<Entry>)>,
    next: usize,
    /// The [out, in] matrix being read row by row.
    rows: Option<MatrixRows>,
    tensors: HashMap<String, Tensor>,
    matrices: HashMap<String, Matrix>,
}

impl SafetensorsStream {
    /// A reader for the weights of a model with `cfg`, to be held as `dtype`.
    pub fn new(cfg: &Config, dtype: Dtype) -> Self {
        Self {
            expected: expected_tensors(cfg).into_iter().collect(),
            dtype,
            buf: Vec::new(),
            offset: 0,
            header: None,
            next: 0,
            rows: None,
            tensors: HashMap::new(),
            matrices: HashMap::new(),
        }
    }

    /// Takes the next bytes of the file.
    pub fn push(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some((start, entries)) = &self.header {
            // Room for a tensor read whole at once, not by doubling.
            if let Some(e) = entries.get(self.next) {
                if matrix_layout(&e.name) != Some(Layout::OutIn) {
                    let want = (start + e.end).saturating_sub(self.offset);
                    self.buf.reserve_exact(want.saturating_sub(self.buf.len()));
                }
            }
        }
        self.buf.extend_from_slice(bytes);
        if self.header.is_none() && !self.read_header()? {
            return Ok(());
        }
        let (start, entries) = self.header.as_ref().expect("read above");
        while let Some(e) = entries.get(self.next) {
            let (begin, end) = (start + e.begin, start + e.end);
            let layout = matrix_layout(&e.name);
            if layout == Some(Layout::OutIn) && e.shape[1] > 0 {
                // Row by row as they come: `wte` is the largest tensor of all.
                let rows = match &mut self.rows {
                    Some(r) => r,
                    None => self.rows.insert(MatrixRows::new(
                        e.shape[0], e.shape[1], e.dtype, self.dtype,
                    )?),
                };
                let row = rows.row_bytes();
                let at = begin + rows.rows_done() * row;
                let whole = (self.offset + self.buf.len()).min(end).saturating_sub(at) / row;
                if whole > 0 {
                    rows.push(&self.buf[at - self.offset..at - self.offset + whole * row]);
                    self.buf.drain(..at + whole * row - self.offset);
                    self.offset = at + whole * row;
                }
                if !rows.is_complete() {
                    break;
                }
                let done = self.rows.take().expect("rows in progress").finish()?;
                self.matrices.insert(e.name.clone(), done);
                self.next += 1;
                continue;
            }
            if self.offset + self.buf.len() < end {
                break;
            }
            let data = &self.buf[begin - self.offset..end - self.offset];
            match layout {
                Some(layout) => {
                    let m = Matrix::from_raw(data, e.dtype, &e.shape, layout, self.dtype)?;
                    self.matrices.insert(e.name.clone(), m);
                }
                None => {
                    let t = Tensor::from_raw_buffer(data, e.dtype, &e.shape, &Device::Cpu)?
                        .to_dtype(DType::F32)?;
                    self.tensors.insert(e.name.clone(), t);
                }
            }
            self.next += 1;
            self.buf.drain(..end - self.offset);
            self.offset = end;
        }
        // Bytes before the next needed tensor (the header, `attn.bias` buffers the model never
        // reads) are not kept.
        let next = entries
            .get(self.next)
            .map_or(usize::MAX, |n| start + n.begin);
        let skip = next.saturating_sub(self.offset).min(self.buf.len());
        self.buf.drain(..skip);
        self.offset += skip;
        Ok(())
    }

    /// Parses the header once all of it is in; false while it is not.
    fn read_header(&mut self) -> Result<bool> {
        let Some(len) = self.buf.get(..8) else {
            return Ok(false);
        };
        let n = u64::from_le_bytes(len.try_into().expect("8 bytes"));
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= MAX_HEADER)
            .ok_or_else(|| bad("the header is larger than 100 MB"))?;
        let Some(json) = self.buf.get(8..8 + n) else {
            return Ok(false);
        };
        let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(json)
            .map_err(|e| bad(format!("not a valid safetensors file (header: {e})")))?;
        let mut all = Vec::new();
        for (key, info) in &header {
            if key == "__metadata__" {
                continue;
            }
            let field = |f: &str| {
                info.get(f)
                    .ok_or_else(|| bad(format!("`{key}` has no {f}")))
            };
            let dtype = match field("dtype")?.as_str() {
                Some("F32") => DType::F32,
                Some("F16") => DType::F16,
                Some("BF16") => DType::BF16,
                Some("F64") => DType::F64,
                other => {
                    return Err(bad(format!(
                        "tensor `{key}`: dtype {other:?} is not a float type the model can use"
                    )))
                }
            };
            let numbers = |f: &str| -> Result<Vec<usize>> {
                field(f)?
                    .as_array()
                    .and_then(|a| a.iter().map(|v| v.as_u64()?.try_into().ok()).collect())
                    .ok_or_else(|| bad(format!("`{key}`: {f} is not a list of sizes")))
            };
            let shape = numbers("shape")?;
            let offsets = numbers("data_offsets")?;
            let [begin, end] = offsets[..] else {
                return Err(bad(format!("`{key}`: data_offsets needs two numbers")));
            };
            let size = shape
                .iter()
                .try_fold(dtype.size_in_bytes(), |a, &d| a.checked_mul(d));
            if end < begin || size != Some(end - begin) {
                return Err(bad(format!(
                    "`{key}`: its offsets do not hold a {shape:?} tensor"
                )));
            }
            all.push((
                key.strip_prefix("transformer.").unwrap_or(key),
                dtype,
                shape,
                begin,
                end,
            ));
        }
        // As the safetensors crate checks: tensors follow each other without gaps or overlaps.
        all.sort_by_key(|t| t.3);
        let mut at = 0;
        for t in &all {
            if t.3 != at {
                return Err(bad(format!(
                    "`{}` does not start where the previous tensor ends",
                    t.0
                )));
            }
            at = t.4;
        }
        let mut entries = Vec::new();
        for (name, dtype, shape, begin, end) in all {
            let Some(want) = self.expected.get(name) else {
                continue;
            };
            if *want != shape {
                return Err(Error::Shape {
                    file: SAFETENSORS,
                    name: name.to_owned(),
                    expected: want.clone(),
                    got: shape,
                });
            }
            entries.push(Entry {
                name: name.to_owned(),
                dtype,
                shape,
                begin,
                end,
            });
        }
        self.header = Some((8 + n, entries));
        Ok(true)
    }

    /// The weights, once every needed tensor has arrived.
    pub fn finish(self) -> Result<Prepared> {
        let header = self.header.as_ref().map(|(_, entries)| entries);
        Prepared::complete(
            SAFETENSORS,
            &self.expected,
            self.tensors,
            self.matrices,
            header.map(|entries| move |name: &str| entries.iter().any(|e| e.name == name)),
            || bad("the file ends before its header"),
            str::to_owned,
        )
    }
}

/// Tensors already made into what the model holds.
pub struct Prepared {
    /// The file they came from, for messages.
    file: &'static str,
    tensors: HashMap<String, Tensor>,
    matrices: HashMap<String, Matrix>,
}

impl Prepared {
    /// The vectors (`tensors`) and weight matrices read from `file`, by HF name, once every
    /// tensor of `expected` is among them; else the sentence for a file that ended early:
    /// `no_header()` if its header was not read, else for the first missing tensor (`listed`:
    /// whether the header listed it; `in_file`: its name as the file spells it).
    pub fn complete<L: Fn(&str) -> bool>(
        file: &'static str,
        expected: &HashMap<String, Vec<usize>>,
        tensors: HashMap<String, Tensor>,
        matrices: HashMap<String, Matrix>,
        listed: Option<L>,
        no_header: impl FnOnce() -> Error,
        in_file: impl Fn(&str) -> String,
    ) -> Result<Self> {
        let mut missing: Vec<&String> = expected
            .keys()
            .filter(|k| !tensors.contains_key(*k) && !matrices.contains_key(*k))
            .collect();
        missing.sort();
        if let Some(name) = missing.first() {
            return Err(match listed {
                None => no_header(),
                Some(listed) if listed(name) => Error::Weights {
                    file,
                    reason: "the file ends before all of its tensors".into(),
                },
                Some(_) => Error::MissingTensor {
                    file,
                    name: in_file(name),
                },
            });
        }
        Ok(Self {
            file,
            tensors,
            matrices,
        })
    }
}

impl TensorSource for Prepared {
    fn tensor(&self, name: &str, _shape: &[usize]) -> Result<Tensor> {
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| Error::MissingTensor {
                file: self.file,
                name: name.to_owned(),
            })
    }

    fn matrix(&self, name: &str, _rows: usize, _cols: usize, _dtype: Dtype) -> Result<Matrix> {
        self.matrices
            .get(name)
            .cloned()
            .ok_or_else(|| Error::MissingTensor {
                file: self.file,
                name: name.to_owned(),
            })
    }
}

/// A weights file read as it arrives.
enum WeightsStream {
    Safetensors(SafetensorsStream),
    Gguf(GgufStream),
    Torch(Box<TorchStream>),
}

impl WeightsStream {
    fn push(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Self::Safetensors(s) => s.push(bytes),
            Self::Gguf(s) => s.push(bytes),
            Self::Torch(s) => s.push(bytes),
        }
    }

    fn finish(self) -> Result<Prepared> {
        match self {
            Self::Safetensors(s) => s.finish(),
            Self::Gguf(s) => s.finish(),
            Self::Torch(s) => s.finish(),
        }
    }
}

/// Bytes of a streamed file held back before its reader sees them (see `BotLoader::head`): a
/// web page shows itself within them.
const HEAD: usize = 64;

/// A bot assembled from its files as they come, in the order [`files::next_wanted`] asks for
/// them: small files whole ([`BotLoader::add`]), weights files in pieces ([`BotLoader::push`];
/// [`files::streamed`] says which files may come that way).
pub struct BotLoader {
    dtype: Dtype,
    files: Vec<(&'static str, Vec<u8>)>,
    stream: Option<(&'static str, WeightsStream)>,
    /// The streamed file's first [`HEAD`] bytes, held back from its reader until there are
    /// enough to tell a web page (an error page sent in the file's place) from weights.
    head: Vec<u8>,
    /// The tokenizer, made as soon as its files are in (see [`Self::add`]), and the files it
    /// was made from.
    tokenizer: Option<(files::Choice, Tokenizer)>,
}

impl BotLoader {
    /// An empty loader for a bot whose weights are held as `dtype`.
    pub fn new(dtype: Dtype) -> Self {
        Self {
            dtype,
            files: Vec::new(),
            stream: None,
            head: Vec::new(),
            tokenizer: None,
        }
    }

    /// Adds a whole file (unknown names are ignored); a weights file is read as one piece.
    pub fn add(&mut self, name: &str, bytes: Vec<u8>) -> Result<()> {
        if files::streamed(name) {
            return self.push(name, &bytes);
        }
        if let Some(n) = files::all_names().find(|n| *n == name) {
            files::check_not_web_page(n, &bytes)?;
            self.files.push((n, bytes));
            // Made now, before the weights arrive: wasm memory never shrinks, so the tens of MB
            // that making it takes for a moment are then reused by the weights rather than added
            // on top of them. Its errors are left for `finish` to report, in their usual order.
            let files = added(&self.files, self.stream.as_ref().map(|(n, _)| *n));
            if let Ok(Some(choice)) = files.choice(files::TOKENIZER_PART) {
                if self.tokenizer.as_ref().map(|(c, _)| *c) != Some(choice) {
                    self.tokenizer = files.tokenizer().ok().map(|t| (choice, t));
                }
            }
        }
        Ok(())
    }

    /// Adds the next piece of a streamed file; `config.json` must already be in.
    pub fn push(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        if !files::streamed(name) {
            return Err(Error::Parameter(format!("{name} cannot be read in pieces")));
        }
        if let Some((current, _)) = &self.stream {
            if *current != name {
                return Err(Error::Parameter(format!(
                    "{name} comes after {current}: one weights file at a time"
                )));
            }
        } else {
            let config = self
                .files
                .iter()
                .find(|(n, _)| *n == files::CONFIG)
                .ok_or_else(|| {
                    Error::MissingFile(format!("{} comes before {name}", files::CONFIG))
                })?;
            let cfg = Config::from_json(&config.1)?;
            let (file, stream) = match name {
                files::GGUF => (
                    files::GGUF,
                    WeightsStream::Gguf(GgufStream::new(&cfg, self.dtype)),
                ),
                files::PYTORCH => (
                    files::PYTORCH,
                    WeightsStream::Torch(Box::new(TorchStream::new(&cfg, self.dtype))),
                ),
                _ => (
                    SAFETENSORS,
                    WeightsStream::Safetensors(SafetensorsStream::new(&cfg, self.dtype)),
                ),
            };
            self.stream = Some((file, stream));
        }
        let (file, stream) = self.stream.as_mut().expect("just made");
        if self.head.len() < HEAD {
            let take = bytes.len().min(HEAD - self.head.len());
            self.head.extend_from_slice(&bytes[..take]);
            if self.head.len() < HEAD {
                return Ok(());
            }
            files::check_not_web_page(file, &self.head)?;
            stream.push(&self.head)?;
            return stream.push(&bytes[take..]);
        }
        stream.push(bytes)
    }

    /// The bot, once every file it needs is in.
    pub fn finish(self) -> Result<Bot> {
        let files = added(&self.files, self.stream.as_ref().map(|(n, _)| *n));
        match self.stream {
            Some((file, mut stream)) => {
                if self.head.len() < HEAD {
                    // A file shorter than the head: what was held back goes in now.
                    files::check_not_web_page(file, &self.head)?;
                    stream.push(&self.head)?;
                }
                let weights = stream.finish()?;
                let tokenizer = match (self.tokenizer, files.choice(files::TOKENIZER_PART)?) {
                    (Some((from, t)), Some(choice)) if from == choice => t,
                    _ => files.tokenizer()?,
                };
                Bot::assemble(&files, tokenizer, &weights, self.dtype)
            }
            // Every weights file streams here, so none came: the sentence for missing weights.
            // (Not `Bot::load`, whose whole-file readers would be built into the page for it.)
            None => {
                files.choice(files::WEIGHTS)?;
                Err(Error::Parameter("the weights file was not read".into()))
            }
        }
    }
}

/// The whole files a [`BotLoader`] was given, and the `streamed` one as present (its bytes are
/// gone).
fn added<'a>(
    files: &'a [(&'static str, Vec<u8>)],
    streamed: Option<&'static str>,
) -> ModelFiles<'a> {
    ModelFiles::from_lookup(|n| {
        files
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, b)| b.as_slice())
            .or_else(|| (streamed == Some(n)).then_some(&[][..]))
    })
}
