//! Shared helpers: fixture models, the HF reference file, hand-built checkpoints.

use std::path::{Path, PathBuf};

use botcard::{Bot, ModelFiles};
use serde_json::Value;

/// `tests/fixtures/models/<name>` (made by `tests/fixtures/make_fixtures.py`).
pub fn model_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

/// The reference outputs HF transformers recorded for the fixtures.
pub fn reference() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference.json");
    serde_json::from_slice(&std::fs::read(path).expect("reference.json; run make_fixtures.py"))
        .unwrap()
}

/// The files of a model folder, read into memory (missing ones absent).
#[derive(Clone)]
pub struct Files(pub Vec<(String, Vec<u8>)>);

impl Files {
    pub fn read(dir: &Path) -> Self {
        let mut v = Vec::new();
        for name in botcard::files::all_names() {
            if let Ok(b) = std::fs::read(dir.join(name)) {
                v.push((name.to_owned(), b));
            }
        }
        Self(v)
    }

    pub fn of(name: &str) -> Self {
        Self::read(&model_dir(name))
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
    }

    pub fn set(&mut self, name: &str, bytes: Vec<u8>) -> &mut Self {
        self.0.retain(|(n, _)| n != name);
        self.0.push((name.to_owned(), bytes));
        self
    }

    pub fn remove(&mut self, name: &str) -> &mut Self {
        self.0.retain(|(n, _)| n != name);
        self
    }

    pub fn model_files(&self) -> ModelFiles<'_> {
        ModelFiles::from_lookup(|name| self.get(name))
    }

    pub fn load(&self) -> botcard::Result<Bot> {
        Bot::load(&self.model_files(), botcard::Dtype::F32)
    }

    /// Feeds the files to a loader as the worker does: the weights in pieces of `piece` bytes
    /// (only their first `limit`), the other files whole.
    pub fn stream(
        &self,
        dtype: botcard::Dtype,
        piece: usize,
        limit: usize,
    ) -> botcard::Result<Bot> {
        let mut loader = botcard::stream::BotLoader::new(dtype);
        for n in botcard::files::all_names() {
            let Some(bytes) = self.get(n) else {
                continue;
            };
            if botcard::files::streamed(n) {
                // As the worker does: the file is announced before its first bytes (an empty
                // one has none).
                loader.push(n, &[])?;
                for chunk in bytes[..limit.min(bytes.len())].chunks(piece) {
                    loader.push(n, chunk)?;
                }
            } else {
                loader.add(n, bytes.to_vec())?;
            }
        }
        loader.finish()
    }
}

/// Loads a fixture bot by folder name.
pub fn bot(name: &str) -> Bot {
    Files::of(name)
        .load()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Asserts two float slices agree within `tol`, printing the worst element.
pub fn assert_close(what: &str, got: &[f32], expected: &[f64], tol: f64) -> f64 {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    let (mut worst, mut at) = (0.0f64, 0);
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        let d = (f64::from(*g) - e).abs();
        if d > worst {
            worst = d;
            at = i;
        }
    }
    assert!(
        worst <= tol,
        "{what}: max |Δ| = {worst:e} at {at} (got {}, expected {}), tolerance {tol:e}",
        got[at],
        expected[at]
    );
    worst
}

pub fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

pub fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// One tensor of a hand-built `torch.save` zip.
pub struct PthTensor<'a> {
    pub name: &'a str,
    pub storage_class: &'a str,
    pub shape: Vec<u32>,
    /// Declared element count of the storage.
    pub storage_len: u32,
    pub data: Vec<u8>,
}

/// A `torch.save` zip as torch writes it: `archive/data.pkl` (protocol 2) + `archive/data/<k>`.
pub fn torch_zip(tensors: &[PthTensor]) -> Vec<u8> {
    torch_zip_with_pickle(tensors, None)
}

/// Same, but with `data.pkl` replaced when `pickle` is given.
pub fn torch_zip_with_pickle(tensors: &[PthTensor], pickle: Option<&[u8]>) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'('];
    let s = |p: &mut Vec<u8>, s: &str| {
        p.push(b'X');
        p.extend_from_slice(&(s.len() as u32).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    };
    let int = |p: &mut Vec<u8>, v: u32| {
        p.push(b'J');
        p.extend_from_slice(&v.to_le_bytes());
    };
    for (k, t) in tensors.iter().enumerate() {
        s(&mut p, t.name);
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        p.push(b'(');
        s(&mut p, "storage");
        p.extend_from_slice(format!("ctorch\n{}\n", t.storage_class).as_bytes());
        s(&mut p, &k.to_string());
        s(&mut p, "cpu");
        int(&mut p, t.storage_len);
        p.extend_from_slice(b"tQ");
        int(&mut p, 0);
        p.push(b'(');
        for &d in &t.shape {
            int(&mut p, d);
        }
        p.push(b't');
        p.push(b'(');
        let mut strides: Vec<u32> = Vec::new();
        let mut acc = 1u32;
        for &d in t.shape.iter().rev() {
            strides.push(acc);
            acc = acc.wrapping_mul(d);
        }
        for st in strides.iter().rev() {
            int(&mut p, *st);
        }
        p.push(b't');
        p.push(0x89);
        p.extend_from_slice(b"ccollections\nOrderedDict\n)R");
        p.extend_from_slice(b"tR");
    }
    p.extend_from_slice(b"u.");
    let mut out = std::io::Cursor::new(Vec::new());
    {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("archive/data.pkl", opts).unwrap();
        zip.write_all(pickle.unwrap_or(&p)).unwrap();
        for (k, t) in tensors.iter().enumerate() {
            zip.start_file(format!("archive/data/{k}"), opts).unwrap();
            zip.write_all(&t.data).unwrap();
        }
        zip.finish().unwrap();
    }
    out.into_inner()
}

/// Runs the `botcard` binary; returns (exit ok, stdout, stderr).
pub fn botcard(args: &[&str]) -> (bool, String, String) {
    botcard_env(&[], args)
}

/// [`botcard`] with environment variables set for the process.
pub fn botcard_env(env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_botcard"))
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Rewrites the tensors of a safetensors file of f32 or f16 tensors through
/// `edit(name, shape, data)`, in f32; the file written is all f32.
pub fn edit_safetensors(bytes: &[u8], edit: impl Fn(&str, &[usize], &mut [f32])) -> Vec<u8> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let mut data: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            safetensors::Dtype::F16 => view
                .data()
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => panic!("{name}: {other:?}"),
        };
        edit(&name, view.shape(), &mut data);
        tensors.push((
            name,
            view.shape().to_vec(),
            data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ));
    }
    let views = tensors.iter().map(|(n, shape, data)| {
        (
            n.clone(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .unwrap(),
        )
    });
    safetensors::serialize(views, None).unwrap()
}
