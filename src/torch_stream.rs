//! `pytorch_model.bin` — the zip that `torch.save` writes, the only weights file of most
//! huggingtweets bots — read as it arrives, as [`crate::stream`] reads `model.safetensors`: each
//! tensor becomes what the model holds once its storage's bytes are in, `wte` row by row, and
//! the bytes are dropped. A tab loading a 510 MB checkpoint holds the quantized model and one
//! storage at a time, never the file.
//!
//! The zip is walked by its local entry headers, front to back. The `zip` crate cannot do this:
//! its archive reader starts from the central directory at the file's end, and its streaming
//! reader pulls from a `Read` where the bytes here are pushed as they come. torch writes every
//! entry stored (uncompressed) with a data descriptor, so a header does not say how long its
//! data is: `data.pkl` (which comes first) ends at the descriptor that states its length, and
//! each storage is as long as the pickle declares — checked against its descriptor. Entries that
//! other zip writers made (deflated, sizes in the header, storages before `data.pkl`) are read
//! too; the tests compare every case with the whole-file reader ([`crate::weights::Weights`]).

use std::collections::HashMap;
use std::io::Read;

use candle_core::{DType, Tensor};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::files::PYTORCH;
use crate::model::{matrix_layout, Layout, Matrix, MatrixRows};
use crate::pickle::TensorRef;
use crate::quant::Dtype;
use crate::stream::Prepared;
use crate::weights::{self, expected_tensors};

fn bad(reason: impl Into<String>) -> Error {
    Error::Weights {
        file: PYTORCH,
        reason: reason.into(),
    }
}

const LOCAL_HEADER: [u8; 4] = *b"PK\x03\x04";
const DESCRIPTOR: [u8; 4] = *b"PK\x07\x08";
/// The central directory and its end record: no entry comes after them.
const CENTRAL: [[u8; 4]; 2] = [*b"PK\x01\x02", *b"PK\x05\x06"];
/// General-purpose flag bits: encrypted, sizes in a data descriptor after the data.
const ENCRYPTED: u16 = 1;
const HAS_DESCRIPTOR: u16 = 1 << 3;
const STORED: u16 = 0;
const DEFLATED: u16 = 8;

/// What becomes of an entry's data.
enum Use {
    /// Not needed (`version`, the `attn.bias` masks' storages, …): dropped as it comes.
    Skip,
    /// Kept whole, then read: `data.pkl`, `byteorder`, storages.
    Keep,
    /// The storage of one [out, in] matrix (`wte`), made row by row; its view `t` starts
    /// `skip` bytes into the data.
    Rows {
        name: String,
        t: TensorRef,
        skip: usize,
    },
}

/// The entry whose data is arriving.
struct Entry {
    name: String,
    method: u16,
    /// Bytes of data, when known (from the header, or the pickle for a storage).
    size: Option<usize>,
    descriptor: bool,
    /// Whether its sizes are 64-bit (a zip64 extra field).
    zip64: bool,
    /// File offset of its first data byte.
    start: usize,
    what: Use,
    /// For data of unknown size: how far the search for its descriptor has looked.
    searched: usize,
}

/// A float storage (`data/<key>`) as the pickle declares it.
#[derive(Default)]
struct Storage {
    /// Its length in bytes.
    bytes: usize,
    /// The tensors the model needs from it, by name.
    needed: Vec<(String, TensorRef)>,
}

enum State {
    /// A local header (or the central directory) starts at `offset`.
    Header,
    Data(Entry),
    /// The data descriptor of an entry whose data ended at `offset`.
    Descriptor(Entry),
    /// The central directory: the rest of the file is not needed.
    End,
}

/// `pytorch_model.bin`, read as it arrives.
pub struct TorchStream {
    expected: HashMap<String, Vec<usize>>,
    dtype: Dtype,
    /// Bytes received and not yet used; `buf[0]` is at `offset` in the file.
    buf: Vec<u8>,
    offset: usize,
    state: State,
    /// `data.pkl`'s folder in the archive (`archive/`, `pytorch_model/`), once it is seen.
    dir: Option<String>,
    /// From `data.pkl`, once read: every float storage, by key.
    storages: Option<HashMap<String, Storage>>,
    /// Entries under a `data/` folder that came before `data.pkl`, kept until it is read.
    early: Vec<(String, Vec<u8>)>,
    rows: Option<MatrixRows>,
    tensors: HashMap<String, Tensor>,
    matrices: HashMap<String, Matrix>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl TorchStream {
    /// A reader for the weights of a model with `cfg`, to be held as `dtype`.
    pub fn new(cfg: &Config, dtype: Dtype) -> Self {
        Self {
            expected: expected_tensors(cfg).into_iter().collect(),
            dtype,
            buf: Vec::new(),
            offset: 0,
            state: State::Header,
            dir: None,
            storages: None,
            early: Vec::new(),
            rows: None,
            tensors: HashMap::new(),
            matrices: HashMap::new(),
        }
    }

    /// Takes the next bytes of the file.
    pub fn push(&mut self, bytes: &[u8]) -> Result<()> {
        if let State::Data(e) = &self.state {
            // Room for an entry kept whole at once, not by doubling.
            if let (Use::Keep, Some(size)) = (&e.what, e.size) {
                let want = (e.start + size).saturating_sub(self.offset);
                self.buf.reserve_exact(want.saturating_sub(self.buf.len()));
            }
        }
        self.buf.extend_from_slice(bytes);
        while self.step()? {}
        Ok(())
    }

    /// The end of the buffered bytes, as a file offset.
    fn end(&self) -> usize {
        self.offset + self.buf.len()
    }

    /// Drops the buffered bytes before file offset `to`.
    fn drop_to(&mut self, to: usize) {
        let n = to.saturating_sub(self.offset).min(self.buf.len());
        self.buf.drain(..n);
        self.offset += n;
    }

    /// Makes progress with the bytes in; false when it needs more.
    fn step(&mut self) -> Result<bool> {
        match std::mem::replace(&mut self.state, State::End) {
            State::End => {
                self.buf.clear();
                Ok(false)
            }
            State::Header => self.header(),
            State::Data(e) => self.data(e),
            State::Descriptor(e) => self.descriptor(e),
        }
    }

    fn header(&mut self) -> Result<bool> {
        let b = &self.buf;
        if b.len() < 4 {
            self.state = State::Header;
            return Ok(false);
        }
        if self.offset == 0 && b.starts_with(&weights::LEGACY_MAGIC) {
            return Err(bad(weights::LEGACY));
        }
        let sig: [u8; 4] = b[..4].try_into().expect("4 bytes");
        if CENTRAL.contains(&sig) && self.offset > 0 {
            self.buf.clear();
            return Ok(false); // stays End
        }
        if sig != LOCAL_HEADER {
            return Err(bad(if self.offset == 0 {
                "not a torch.save zip archive (it does not start with a zip entry)".to_owned()
            } else {
                format!(
                    "not a torch.save zip archive (no zip entry at byte {})",
                    self.offset
                )
            }));
        }
        if b.len() < 30 {
            self.state = State::Header;
            return Ok(false);
        }
        let (flags, method) = (u16_at(b, 6), u16_at(b, 8));
        let (csize, usize_) = (u32_at(b, 18), u32_at(b, 22));
        let (name_len, extra_len) = (u16_at(b, 26) as usize, u16_at(b, 28) as usize);
        let data_at = 30 + name_len + extra_len;
        if b.len() < data_at {
            self.state = State::Header;
            return Ok(false);
        }
        let name = String::from_utf8_lossy(&b[30..30 + name_len]).into_owned();
        if flags & ENCRYPTED != 0 {
            return Err(bad(format!("{name} is encrypted")));
        }
        if method != STORED && method != DEFLATED {
            return Err(bad(format!(
                "{name} is compressed with zip method {method}, which torch never writes"
            )));
        }
        // A zip64 extra field holds the 64-bit sizes (uncompressed, then compressed).
        let extra = &b[30 + name_len..data_at];
        let mut zip64 = None;
        let mut at = 0;
        while at + 4 <= extra.len() {
            let (id, len) = (u16_at(extra, at), u16_at(extra, at + 2) as usize);
            let body = &extra[(at + 4).min(extra.len())..(at + 4 + len).min(extra.len())];
            if id == 1 {
                zip64 = Some(body.to_vec());
            }
            at += 4 + len;
        }
        let descriptor = flags & HAS_DESCRIPTOR != 0;
        let mut size = (!descriptor).then_some(u64::from(csize));
        if !descriptor && csize == u32::MAX {
            // 64-bit sizes, each present where its 32-bit field is 0xFFFFFFFF, uncompressed first.
            let skip = if usize_ == u32::MAX { 8 } else { 0 };
            let z = zip64.as_deref().unwrap_or_default();
            size = Some(z.get(skip..skip + 8).map(|c| u64_at(c, 0)).ok_or_else(|| {
                bad(format!(
                    "{name}: its header says zip64 but has no 64-bit size"
                ))
            })?);
        }
        let size = size
            .map(usize::try_from)
            .transpose()
            .map_err(|_| bad(format!("{name} is larger than this machine can address")))?;
        let start = self.offset + data_at;
        self.drop_to(start);
        let what = self.what_of(&name);
        let size = size.or_else(|| self.predicted_size(&name, method));
        let what = match what {
            Use::Keep => self.rows_of(&name, method).unwrap_or(Use::Keep),
            other => other,
        };
        self.state = State::Data(Entry {
            name,
            method,
            size,
            descriptor,
            zip64: zip64.is_some(),
            start,
            what,
            searched: 0,
        });
        Ok(true)
    }

    /// The key of a storage entry (`{dir}data/{key}`), with the folder known or guessed.
    fn storage_key<'n>(&self, name: &'n str) -> Option<&'n str> {
        match &self.dir {
            Some(dir) => name.strip_prefix(dir.as_str())?.strip_prefix("data/"),
            None => name.rsplit_once("data/").map(|(_, key)| key),
        }
    }

    fn what_of(&mut self, name: &str) -> Use {
        if self.dir.is_none() && name.ends_with("data.pkl") {
            self.dir = Some(name.strip_suffix("data.pkl").unwrap_or_default().to_owned());
            return Use::Keep;
        }
        let Some(dir) = &self.dir else {
            // Before `data.pkl`, any storage may be needed.
            return if self.storage_key(name).is_some() {
                Use::Keep
            } else {
                Use::Skip
            };
        };
        if name.strip_prefix(dir.as_str()) == Some("byteorder") {
            return Use::Keep;
        }
        match (&self.storages, self.storage_key(name)) {
            (Some(s), Some(key)) if s.get(key).is_some_and(|s| !s.needed.is_empty()) => Use::Keep,
            (None, Some(_)) => Use::Keep,
            _ => Use::Skip,
        }
    }

    /// A stored storage's length, from the pickle.
    fn predicted_size(&self, name: &str, method: u16) -> Option<usize> {
        let key = self.storage_key(name)?;
        (method == STORED)
            .then(|| self.storages.as_ref()?.get(key).map(|s| s.bytes))
            .flatten()
    }

    /// Row by row, for a stored storage that holds exactly one needed [out, in] matrix as a
    /// contiguous view.
    fn rows_of(&self, name: &str, method: u16) -> Option<Use> {
        let key = self.storage_key(name)?;
        let storage = self.storages.as_ref()?.get(key)?;
        let [(tensor, t)] = &storage.needed[..] else {
            return None;
        };
        let usable = method == STORED
            && matrix_layout(tensor) == Some(Layout::OutIn)
            && weights::is_contiguous(t)
            && t.shape.get(1).is_some_and(|&c| c > 0);
        let size = t.storage_type.size()?;
        usable.then(|| Use::Rows {
            name: tensor.clone(),
            t: t.clone(),
            skip: t.offset * size,
        })
    }

    fn data(&mut self, mut e: Entry) -> Result<bool> {
        let Some(size) = e.size else {
            return self.search(e);
        };
        let end = e.start + size;
        match &e.what {
            Use::Skip => self.drop_to(end.min(self.end())),
            Use::Keep => {
                if self.end() < end {
                    self.state = State::Data(e);
                    return Ok(false);
                }
                let data: Vec<u8> = self.buf.drain(..end - self.offset).collect();
                self.offset = end;
                self.use_entry(&e.name, e.method, data)?;
            }
            Use::Rows { name, t, skip } => {
                let (name, t) = (name.clone(), t.clone());
                let begin = e.start + skip;
                self.drop_to(begin.min(self.end()));
                let rows = match &mut self.rows {
                    Some(r) => r,
                    None => self.rows.insert(MatrixRows::new(
                        t.shape[0],
                        t.shape[1],
                        weights::storage_dtype(&t.storage_type).expect("a float storage"),
                        self.dtype,
                    )?),
                };
                let row = rows.row_bytes();
                let at = begin + rows.rows_done() * row;
                if self.offset == at {
                    let view_end = begin + t.shape[0] * row;
                    let whole = (self.offset + self.buf.len())
                        .min(view_end)
                        .saturating_sub(at)
                        / row;
                    if whole > 0 {
                        rows.push(&self.buf[..whole * row]);
                        self.buf.drain(..whole * row);
                        self.offset += whole * row;
                    }
                }
                if !rows.is_complete() {
                    self.state = State::Data(e);
                    return Ok(false);
                }
                let done = self.rows.take().expect("rows in progress").finish()?;
                self.matrices.insert(name, done);
                // The rest of the storage, if the view does not reach its end.
                e.what = Use::Skip;
                self.state = State::Data(e);
                return Ok(true);
            }
        }
        if self.offset < end {
            self.state = State::Data(e);
            return Ok(false);
        }
        self.state = if e.descriptor {
            State::Descriptor(e)
        } else {
            State::Header
        };
        Ok(true)
    }

    /// Data of unknown length ends at a descriptor that states that length.
    fn search(&mut self, mut e: Entry) -> Result<bool> {
        let b = &self.buf;
        let wide = if e.zip64 { 8 } else { 4 };
        let mut found = None;
        let mut at = e.searched;
        while let Some(p) = b[at.min(b.len())..]
            .windows(4)
            .position(|w| w == DESCRIPTOR)
            .map(|p| p + at)
        {
            if p + 8 + 2 * wide > b.len() {
                break; // its length fields are not in yet
            }
            let field = |at: usize| {
                if e.zip64 {
                    u64_at(b, at)
                } else {
                    u64::from(u32_at(b, at))
                }
            };
            // Its compressed length is the bytes so far, and so is a stored entry's length.
            let (compressed, length) = (field(p + 8), field(p + 8 + wide));
            if compressed == p as u64 && (e.method != STORED || length == p as u64) {
                found = Some(p);
                break;
            }
            at = p + 1;
        }
        let Some(p) = found else {
            e.searched = at.max(b.len().saturating_sub(7 + 2 * wide));
            self.state = State::Data(e);
            return Ok(false);
        };
        e.size = Some(p);
        if let Use::Keep = e.what {
            let data: Vec<u8> = self.buf.drain(..p).collect();
            self.offset += p;
            self.use_entry(&e.name, e.method, data)?;
        } else {
            self.drop_to(self.offset + p);
        }
        self.state = State::Descriptor(e);
        Ok(true)
    }

    fn descriptor(&mut self, e: Entry) -> Result<bool> {
        let wide = if e.zip64 { 8 } else { 4 };
        // The signature is optional in the zip format; torch writes it.
        if self.buf.len() < 4 {
            self.state = State::Descriptor(e);
            return Ok(false);
        }
        let signed = self.buf.starts_with(&DESCRIPTOR);
        let len = if signed { 4 } else { 0 } + 4 + 2 * wide;
        if self.buf.len() < len {
            self.state = State::Descriptor(e);
            return Ok(false);
        }
        let at = if signed { 8 } else { 4 };
        let stated = if e.zip64 {
            u64_at(&self.buf, at)
        } else {
            u32_at(&self.buf, at) as u64
        };
        let size = e.size.expect("known once the data ended") as u64;
        if stated != size {
            return Err(bad(format!(
                "{} holds {stated} bytes where its pickle declares {size}",
                e.name
            )));
        }
        self.drop_to(self.offset + len);
        self.state = State::Header;
        Ok(true)
    }

    /// Reads a whole entry's data (inflated if deflated).
    fn use_entry(&mut self, name: &str, method: u16, data: Vec<u8>) -> Result<()> {
        let data = if method == DEFLATED {
            let limit = self.file_limit();
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(&data[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| bad(format!("{name}: {e}")))?;
            if out.len() > limit {
                return Err(bad(format!("{name} inflates past its storage's size")));
            }
            out
        } else {
            data
        };
        let dir = self.dir.clone().unwrap_or_default();
        let Some(rest) = name.strip_prefix(dir.as_str()) else {
            return Ok(());
        };
        if rest == "data.pkl" && self.storages.is_none() {
            return self.read_pickle(&data);
        }
        if rest == "byteorder" {
            return weights::check_byteorder(&data).map_err(bad);
        }
        if self.storages.is_none() {
            self.early.push((name.to_owned(), data));
            return Ok(());
        }
        self.use_storage(name, &data)
    }

    /// The most bytes an inflated entry may have: its storage's, or a pickle's worth.
    fn file_limit(&self) -> usize {
        self.storages
            .as_ref()
            .and_then(|s| s.values().map(|s| s.bytes).max())
            .unwrap_or(1 << 30)
    }

    fn read_pickle(&mut self, pkl: &[u8]) -> Result<()> {
        let mut storages: HashMap<String, Storage> = HashMap::new();
        for (name, t) in weights::state_dict(pkl).map_err(bad)? {
            let needed = match self.expected.get(&name) {
                None => false,
                Some(want) if *want != t.shape => {
                    return Err(Error::Shape {
                        file: PYTORCH,
                        name,
                        expected: want.clone(),
                        got: t.shape,
                    })
                }
                Some(_) => true,
            };
            if !needed {
                // Unneeded storages are only skipped; their size need not be known.
                if let Some(bytes) = t
                    .storage_type
                    .size()
                    .and_then(|n| t.storage_len.checked_mul(n))
                {
                    storages.entry(t.storage_key.clone()).or_insert(Storage {
                        bytes,
                        needed: Vec::new(),
                    });
                }
                continue;
            }
            let bytes =
                weights::storage_bytes(&t).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            let storage = storages.entry(t.storage_key.clone()).or_default();
            storage.bytes = bytes;
            storage.needed.push((name, t));
        }
        self.storages = Some(storages);
        for (name, data) in std::mem::take(&mut self.early) {
            self.use_storage(&name, &data)?;
        }
        Ok(())
    }

    /// Makes the needed tensors of one storage from its bytes.
    fn use_storage(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let Some(key) = self.storage_key(name) else {
            return Ok(());
        };
        let Some(Storage { bytes, needed }) = self.storages.as_ref().and_then(|s| s.get(key))
        else {
            return Ok(());
        };
        if data.len() > *bytes {
            return Err(bad(format!(
                "{name} holds {} bytes, more than its storage's {bytes}",
                data.len()
            )));
        }
        for (tensor, t) in needed.clone() {
            let fail = |e: String| bad(format!("tensor `{tensor}`: {name}: {e}"));
            let layout = matrix_layout(&tensor);
            let size = t
                .storage_type
                .size()
                .expect("a needed storage is a float one");
            let numel: usize = t.shape.iter().product();
            let run = t.offset * size..(t.offset + numel) * size;
            match layout {
                Some(layout) if weights::is_contiguous(&t) && run.end <= data.len() => {
                    let dtype = weights::storage_dtype(&t.storage_type).expect("float");
                    let m = Matrix::from_raw(&data[run], dtype, &t.shape, layout, self.dtype)?;
                    self.matrices.insert(tensor, m);
                }
                Some(layout) => {
                    let flat = weights::storage_tensor(data, &t).map_err(fail)?;
                    let w = flat.reshape(t.shape.as_slice())?;
                    let w = match layout {
                        Layout::OutIn => w,
                        Layout::InOut => w.t()?.contiguous()?,
                    };
                    self.matrices.insert(tensor, Matrix::new(w, self.dtype)?);
                }
                None => {
                    let flat = weights::storage_tensor(data, &t).map_err(fail)?;
                    let v = flat.reshape(t.shape.as_slice())?.to_dtype(DType::F32)?;
                    self.tensors.insert(tensor, v);
                }
            }
        }
        Ok(())
    }

    /// The weights, once every needed tensor has arrived.
    pub fn finish(self) -> Result<Prepared> {
        let listed = self
            .storages
            .as_ref()
            .map(|s| move |name: &str| s.values().any(|s| s.needed.iter().any(|(n, _)| n == name)));
        Prepared::complete(
            PYTORCH,
            &self.expected,
            self.tensors,
            self.matrices,
            listed,
            || bad("the file ends before its data.pkl"),
            str::to_owned,
        )
    }
}
