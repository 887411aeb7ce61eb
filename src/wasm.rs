//! The WebAssembly face of the library, for `www/worker.js` (the only importer of `pkg/`).
//! Models arrive as bytes the worker fetched, in the order [`next_model_file`] asks for them;
//! errors leave as one readable sentence.

use serde_json::{Map, Value};
use wasm_bindgen::prelude::*;

use crate::files::Known;
use crate::stream::BotLoader;
use crate::{card, files, recipe, Bot, Dtype, Session};

fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

fn to_js<T: serde::Serialize>(v: &T) -> Result<JsValue, JsError> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(js_err)
}

/// `initThreadPool(n)`: starts the `threads` build's n Web Workers (call once); the library
/// uses them once told so ([`thread_pool_started`]).
#[cfg(feature = "threads")]
pub use wasm_bindgen_rayon::init_thread_pool;

/// The threads a generation spreads over now (1 but in the `threads` build once its pool runs).
#[wasm_bindgen(js_name = threadsInUse)]
pub fn threads_in_use() -> usize {
    crate::parallel::threads()
}

/// Tells the `threads` build that `initThreadPool` has resolved: work spreads over its Workers
/// from now on (before, it all runs on the calling thread).
#[cfg(feature = "threads")]
#[wasm_bindgen(js_name = threadPoolStarted)]
pub fn thread_pool_started() {
    crate::parallel::pool_started();
}

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// Parses and sanitizes a model card (`README.md` bytes) into what the card view draws.
#[wasm_bindgen(js_name = parseCard)]
pub fn parse_card(readme: &[u8]) -> Result<JsValue, JsError> {
    to_js(&card::parse_card(readme))
}

/// The next model file to fetch, given `known` (`{name: true}` for a file fetched, `{name:
/// false}` for one the source does not have, `{name: "sentence"}` for one that could not be
/// read, saying why); `undefined` when the model is complete. Throws the sentence that names a
/// missing required file, or says why it could not be read.
#[wasm_bindgen(js_name = nextModelFile)]
pub fn next_model_file(known: JsValue) -> Result<Option<String>, JsError> {
    let known: Map<String, Value> = serde_wasm_bindgen::from_value(known).map_err(js_err)?;
    let of = |n: &str| match known.get(n) {
        Some(Value::Bool(true)) => Known::Present,
        Some(Value::Bool(false)) => Known::Absent,
        Some(Value::String(why)) => Known::Unreadable(why),
        _ => Known::Unasked,
    };
    Ok(files::next_wanted(of).map_err(js_err)?.map(str::to_owned))
}

/// The model files to read at once, side by side, before [`next_model_file`] asks for them: it
/// asks for each whatever else the source holds ([`files::read_ahead`]).
#[wasm_bindgen(js_name = readAheadFiles)]
pub fn read_ahead_files() -> Vec<String> {
    files::read_ahead().map(str::to_owned).collect()
}

/// The model files to read at once along with `name`, once [`next_model_file`] asks for it: the
/// rest of its set of files, asked for next while `name` is found ([`files::read_along`]).
#[wasm_bindgen(js_name = readAlongFiles)]
pub fn read_along_files(name: &str) -> Vec<String> {
    files::read_along(name).map(str::to_owned).collect()
}

/// The prompt huggingtweets cards open with ("My dream is").
#[wasm_bindgen(js_name = samplePrompt)]
pub fn sample_prompt() -> String {
    recipe::SAMPLE_PROMPT.to_owned()
}

/// The file name under which the worker caches a model's weights as they are held
/// ([`WasmBot::held_weights`]): the pre-quantized format's, which the library asks for first.
#[wasm_bindgen(js_name = heldFile)]
pub fn held_file() -> String {
    files::GGUF.to_owned()
}

/// Whether `name` is a weights file (one of the formats of a model's weights).
#[wasm_bindgen(js_name = isWeights)]
pub fn is_weights(name: &str) -> bool {
    files::is_weights(name)
}

/// Whether the worker may hand `name` over in pieces as it downloads ([`WasmLoader::push`]).
#[wasm_bindgen(js_name = isStreamed)]
pub fn is_streamed(name: &str) -> bool {
    files::streamed(name)
}

fn dtype_or_default(dtype: Option<String>) -> Result<Dtype, JsError> {
    match dtype {
        Some(name) => Dtype::parse(&name).map_err(js_err),
        None => Ok(Dtype::default()),
    }
}

/// Whether a hub model loaded as `dtype` (the library's default when absent) is cached as it is
/// held ([`WasmBot::held_weights`]) rather than as its checkpoint ([`Dtype::caches_held`]).
#[wasm_bindgen(js_name = cachesHeld)]
pub fn caches_held(dtype: Option<String>) -> Result<bool, JsError> {
    Ok(dtype_or_default(dtype)?.caches_held())
}

/// A bot loading as its files arrive, in the order [`next_model_file`] asks for them: small files
/// whole, the weights file in pieces as it downloads, so the tab never holds the whole file.
#[wasm_bindgen]
pub struct WasmLoader {
    loader: Option<BotLoader>,
    /// Each file's checksum so far, of the bytes handed in ([`WasmLoader::checksum`]).
    sums: std::collections::HashMap<String, Checksum>,
}

/// A file's length and checksum, made as its bytes go by: what the worker records of a model
/// file it caches (`"<length>:adler32:<hex>"`), and checks the file against when it reads it
/// back. Adler-32, by simd-adler32 (simd128 in wasm): CRC-32, which records held before, ran
/// at 1.4 GB/s in the tab, a third of the time a cached 124M took to read back. A record in
/// that older form (`"<length>:<crc32 in hex>"`) is still checked, by CRC-32, for a file whose
/// record is told before its bytes, so that models cached before are not downloaded again.
#[derive(Default)]
struct Checksum {
    len: u64,
    adler: simd_adler32::Adler32,
    /// CRC-32 too, for a file whose record is in the older form.
    crc: Option<crc32fast::Hasher>,
    /// The record kept of a cached file, told before its bytes ([`WasmLoader::expect`]).
    record: Option<String>,
}

impl Checksum {
    fn update(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        self.adler.write(bytes);
        if let Some(crc) = &mut self.crc {
            crc.update(bytes);
        }
    }

    /// `"<length>:adler32:<hex>"`.
    fn text(&self) -> String {
        format!("{}:adler32:{:08x}", self.len, self.adler.finish())
    }

    /// Whether the record is in the older, CRC-32 form.
    fn is_crc(record: &str) -> bool {
        record.split(':').count() == 2
    }

    /// Whether the bytes so far are those `record` was made of (either form).
    fn matches(&self, record: &str) -> bool {
        match (Self::is_crc(record), &self.crc) {
            (false, _) => record == self.text(),
            (true, Some(crc)) => record == format!("{}:{:08x}", self.len, crc.clone().finalize()),
            (true, None) => false,
        }
    }
}

#[wasm_bindgen]
impl WasmLoader {
    /// A loader for a bot held as `dtype` (`"f32"`, `"q8_0"`; the library's default when absent).
    #[wasm_bindgen(constructor)]
    pub fn new(dtype: Option<String>) -> Result<WasmLoader, JsError> {
        Ok(WasmLoader {
            loader: Some(BotLoader::new(dtype_or_default(dtype)?)),
            sums: Default::default(),
        })
    }

    fn inner(&mut self) -> Result<&mut BotLoader, JsError> {
        self.loader
            .as_mut()
            .ok_or_else(|| js_err("this loader has finished"))
    }

    /// Adds a whole file.
    pub fn add(&mut self, name: &str, bytes: Vec<u8>) -> Result<(), JsError> {
        self.sums.entry(name.to_owned()).or_default().update(&bytes);
        self.inner()?.add(name, bytes).map_err(js_err)
    }

    /// Adds the next piece of a streamed file.
    pub fn push(&mut self, name: &str, bytes: &[u8]) -> Result<(), JsError> {
        self.sums.entry(name.to_owned()).or_default().update(bytes);
        self.inner()?.push(name, bytes).map_err(js_err)
    }

    /// The record of the bytes of `name` handed in so far (`"<length>:adler32:<hex>"`), for the
    /// worker to keep beside a file it caches; also after [`WasmLoader::finish`]; `undefined`
    /// for a file not handed in.
    pub fn checksum(&self, name: &str) -> Option<String> {
        self.sums.get(name).map(Checksum::text)
    }

    /// Tells the loader the record kept of `name`, a cached file, before any of its bytes:
    /// they are checked against it ([`WasmLoader::damaged`]).
    pub fn expect(&mut self, name: &str, record: &str) -> Result<(), JsError> {
        let sum = self.sums.entry(name.to_owned()).or_default();
        if sum.len > 0 {
            return Err(js_err(format!("the record of {name} came after its bytes")));
        }
        if Checksum::is_crc(record) {
            sum.crc = Some(crc32fast::Hasher::new());
        }
        sum.record = Some(record.to_owned());
        Ok(())
    }

    /// The files told of by [`WasmLoader::expect`] whose bytes are not those of their record.
    pub fn damaged(&self) -> Vec<String> {
        let mut names: Vec<String> = (self.sums.iter())
            .filter(|(_, sum)| sum.record.as_ref().is_some_and(|r| !sum.matches(r)))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// The bot, once every file is in (the loader is spent).
    pub fn finish(&mut self) -> Result<WasmBot, JsError> {
        let loader = self
            .loader
            .take()
            .ok_or_else(|| js_err("this loader has finished"))?;
        Ok(WasmBot {
            bot: loader.finish().map_err(js_err)?,
        })
    }
}

/// A loaded bot ([`WasmLoader::finish`]). Any number of [`WasmSession`]s can generate with it.
#[wasm_bindgen]
pub struct WasmBot {
    bot: Bot,
}

#[wasm_bindgen]
impl WasmBot {
    /// Bytes its weights take in memory, for the worker's memory limit.
    #[wasm_bindgen(getter, js_name = weightBytes)]
    pub fn weight_bytes(&self) -> f64 {
        self.bot.model.weight_bytes() as f64
    }

    /// The format its weight matrices are held in (`"f32"`, `"q8_0"`, `"q4_0"`, `"q4k"`).
    #[wasm_bindgen(getter, js_name = heldAs)]
    pub fn held_as(&self) -> String {
        self.bot.model.held_as().to_owned()
    }

    /// The weights as they are held, as a GGUF file to be read piece by piece
    /// ([`WasmHeldFile::next`]): what the worker caches after quantizing a checkpoint at load,
    /// so that a second visit reads the quantized weights.
    #[wasm_bindgen(js_name = heldWeights)]
    pub fn held_weights(&self) -> Result<WasmHeldFile, JsError> {
        Ok(WasmHeldFile {
            file: crate::gguf::HeldFile::of(&self.bot.model).map_err(js_err)?,
            next: 0,
            piece: Vec::new(),
            sum: Checksum::default(),
        })
    }

    /// Every generation setting with its value — the model's, or the one `given` (URL
    /// parameters, widget attributes; names that are not settings are ignored) — and what a
    /// blank means (`[{name, kind, label, help, form, value, placeholder}]`), for the form.
    pub fn settings(&self, given: JsValue) -> Result<JsValue, JsError> {
        let mut settings = self.bot.settings();
        if !(given.is_undefined() || given.is_null()) {
            let mut o: Map<String, Value> =
                serde_wasm_bindgen::from_value(given).map_err(js_err)?;
            o.retain(|name, _| crate::settings::find(name).is_some());
            settings.apply(&o).map_err(js_err)?;
        }
        to_js(&settings.describe())
    }

    /// Starts generating after `prompt`. `overrides` maps setting names to values or text (URL
    /// parameters, form fields); blank text leaves the model's value.
    pub fn start(&self, prompt: &str, overrides: JsValue) -> Result<WasmSession, JsError> {
        let mut settings = self.bot.settings();
        if !(overrides.is_undefined() || overrides.is_null()) {
            let o: Map<String, Value> =
                serde_wasm_bindgen::from_value(overrides).map_err(js_err)?;
            settings.apply(&o).map_err(js_err)?;
        }
        let session = self.bot.session(prompt, settings).map_err(js_err)?;
        Ok(WasmSession { session })
    }
}

/// A bot's held weights as a GGUF file ([`WasmBot::held_weights`]), read with the bot it came from.
#[wasm_bindgen]
pub struct WasmHeldFile {
    file: crate::gguf::HeldFile,
    /// The next piece of `file` to make.
    next: usize,
    /// The piece last handed out, which its view shows.
    piece: Vec<u8>,
    /// Of the pieces handed out so far.
    sum: Checksum,
}

#[wasm_bindgen]
impl WasmHeldFile {
    /// The file's length in bytes.
    #[wasm_bindgen(getter)]
    pub fn size(&self) -> f64 {
        self.file.byte_len() as f64
    }

    /// The record of the pieces handed out so far, as [`WasmLoader::checksum`] gives it: once
    /// all are out, what reading the file back through a loader must give.
    pub fn checksum(&self) -> String {
        self.sum.text()
    }

    /// A view of the next piece of the file (about 1 MB at most: [`crate::gguf::PIECE_BYTES`])
    /// in wasm memory, or `undefined` at its end. The view is valid until the next call into
    /// the library: write it out at once, or copy it (`slice()`). Handing out a view rather
    /// than a copy lets the worker write the file without making 150 MB of JS garbage.
    pub fn next(&mut self, bot: &WasmBot) -> Result<Option<js_sys::Uint8Array>, JsError> {
        if self.next == self.file.pieces() {
            return Ok(None);
        }
        // The spent piece goes before the next is made.
        self.piece = Vec::new();
        self.piece = self.file.piece(&bot.bot.model, self.next).map_err(js_err)?;
        self.sum.update(&self.piece);
        self.next += 1;
        // SAFETY: the view is of `self.piece`, which stays as it is until this is called again
        // or freed; the caller is told to use the view before calling into the library again.
        Ok(Some(unsafe { js_sys::Uint8Array::view(&self.piece) }))
    }
}

/// One generation in progress; it must be stepped with the bot that started it.
#[wasm_bindgen]
pub struct WasmSession {
    session: Session,
}

#[wasm_bindgen]
impl WasmSession {
    /// How many sequences this generation writes.
    #[wasm_bindgen(getter, js_name = sequenceCount)]
    pub fn sequence_count(&self) -> usize {
        self.session.sequence_count()
    }

    /// The seed of its random draws (given, or drawn because none was); undefined for greedy
    /// decoding, which draws nothing.
    #[wasm_bindgen(getter)]
    pub fn seed(&self) -> Option<f64> {
        // Seeds that are drawn fit in 32 bits; a larger given one is shown approximately.
        self.session.seed().map(|s| s as f64)
    }

    /// One token per unfinished sequence: `[{sequence, token_id, text}]`; empty when done.
    pub fn step(&mut self, bot: &WasmBot) -> Result<JsValue, JsError> {
        let tokens = bot.bot.step(&mut self.session).map_err(js_err)?;
        to_js(&tokens)
    }

    /// Whether every sequence has finished.
    #[wasm_bindgen(js_name = isDone)]
    pub fn is_done(&self) -> bool {
        self.session.is_done()
    }

    /// `[{text, token_ids}]` so far.
    pub fn sequences(&self) -> Result<JsValue, JsError> {
        to_js(&self.session.sequences())
    }
}

/// A person's posts, training a bot on them, and zipping its folder: in the `train` build only
/// (`www/pkg-train/`, which the worker loads when a person gives their posts, trains or
/// downloads a bot), so that the archive reader, candle's autograd and the zip writer are not in
/// what every visit downloads.
#[cfg(feature = "train")]
mod training {
    use super::*;
    use crate::archive;
    use crate::dataset::{self, UserPosts};
    use crate::recipe::{Data, DataFile};

    /// A person's posts, read in the tab from the file they gave: an X archive `.zip`, or a
    /// `tweets.js`, JSON Lines or text file. What the card shows of them before a bot exists.
    #[wasm_bindgen]
    pub struct WasmPosts {
        users: Vec<UserPosts>,
        avatar: Option<archive::Avatar>,
    }

    #[wasm_bindgen]
    impl WasmPosts {
        /// Reads `file` (named `name`). An archive is read a slice at a time, only the entries
        /// that hold the posts, the account and its picture. Throws the sentence that says why the
        /// file cannot be read.
        pub fn read(file: web_sys::Blob, name: &str) -> Result<WasmPosts, JsError> {
            let mut reader = BlobReader::new(file)?;
            let mut head = [0u8; 4];
            let n = std::io::Read::read(&mut reader, &mut head).map_err(js_err)?;
            let (archive, bytes) = if archive::is_zip(&head[..n]) {
                let reader = std::io::BufReader::with_capacity(256 << 10, reader.rewound());
                (
                    Some(archive::read(reader, name).map_err(js_err)?),
                    Vec::new(),
                )
            } else {
                if let Some(e) = dataset::too_large(name, reader.len) {
                    return Err(js_err(e));
                }
                (None, reader.rewound().read_all()?)
            };
            let data = DataFile {
                user: None,
                label: name.to_owned(),
                data: match &archive {
                    Some(a) => Data::Archive(a),
                    None => Data::Bytes(&bytes),
                },
            };
            Ok(WasmPosts {
                users: recipe::read_users(&[data]).map_err(js_err)?,
                avatar: archive.and_then(|a| a.avatar),
            })
        }

        /// The card of the bot these posts would make, before training: the huggingtweets header
        /// and data table (parsed as [`parse_card`] parses any card).
        pub fn card(&self) -> Result<JsValue, JsError> {
            let handle = recipe::default_handle(&self.users);
            let markdown = card::huggingtweets_card(
                &self.users,
                &handle,
                None,
                &card::CardNotes {
                    maker: card::Maker::Browser,
                    ..card::CardNotes::default()
                },
            );
            to_js(&card::parse_card(markdown.as_bytes()))
        }

        /// Why these posts are too few to train a bot from (the CLI's sentence), if they are.
        pub fn problem(&self) -> Option<String> {
            dataset::enough_text(&self.users)
                .err()
                .map(|e| e.to_string())
        }

        /// The account's profile picture from the archive (a copy), if it has one.
        pub fn avatar(&self) -> Option<Vec<u8>> {
            self.avatar.as_ref().map(|a| a.bytes.clone())
        }

        /// The picture's type (`image/png`, …).
        #[wasm_bindgen(js_name = avatarType)]
        pub fn avatar_type(&self) -> Option<String> {
            self.avatar.as_ref().map(|a| a.mime.to_owned())
        }
    }

    /// `Read + Seek` over a `Blob` (a `File` the person chose), each read a `FileReaderSync` of a
    /// slice: only the bytes asked for are ever copied in. Workers only.
    struct BlobReader {
        blob: web_sys::Blob,
        sync: web_sys::FileReaderSync,
        pos: u64,
        len: u64,
    }

    impl BlobReader {
        fn new(blob: web_sys::Blob) -> Result<Self, JsError> {
            let sync = web_sys::FileReaderSync::new()
                .map_err(|_| js_err("files can be read only in the page's worker"))?;
            let len = blob.size() as u64;
            Ok(Self {
                blob,
                sync,
                pos: 0,
                len,
            })
        }

        fn rewound(mut self) -> Self {
            self.pos = 0;
            self
        }

        fn read_all(mut self) -> Result<Vec<u8>, JsError> {
            let mut bytes = Vec::with_capacity(self.len as usize);
            std::io::Read::read_to_end(&mut self, &mut bytes).map_err(js_err)?;
            Ok(bytes)
        }
    }

    impl std::io::Read for BlobReader {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
            if n == 0 {
                return Ok(0);
            }
            let failed = |e: JsValue| {
                std::io::Error::other(format!(
                    "the file could not be read ({})",
                    e.as_string().unwrap_or_else(|| format!("{e:?}"))
                ))
            };
            let part = self
                .blob
                .slice_with_f64_and_f64(self.pos as f64, (self.pos + n as u64) as f64)
                .map_err(failed)?;
            let bytes = self.sync.read_as_array_buffer(&part).map_err(failed)?;
            js_sys::Uint8Array::new(&bytes).copy_to(&mut buf[..n]);
            self.pos += n as u64;
            Ok(n)
        }
    }

    impl std::io::Seek for BlobReader {
        fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
            let at = match to {
                std::io::SeekFrom::Start(p) => Some(p),
                std::io::SeekFrom::End(d) => self.len.checked_add_signed(d),
                std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            };
            self.pos = at.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
            })?;
            Ok(self.pos)
        }
    }

    /// A bot's folder (`{name: Uint8Array}`) as one zip for the person to download
    /// ([`recipe::zip_folder`]).
    #[wasm_bindgen(js_name = zipFolder)]
    pub fn zip_folder(handle: &str, files: js_sys::Object) -> Result<Vec<u8>, JsError> {
        let named = named_bytes(&files);
        recipe::zip_folder(
            handle,
            named.iter().map(|(n, b)| (n.as_str(), b.as_slice())),
        )
        .map_err(js_err)
    }

    /// The name of the folder (and zip) of a bot with this @handle ([`recipe::folder_name`]).
    #[wasm_bindgen(js_name = folderName)]
    pub fn folder_name(handle: &str) -> String {
        recipe::folder_name(handle)
    }

    /// The entries of `{name: Uint8Array}`, copied.
    fn named_bytes(files: &js_sys::Object) -> Vec<(String, Vec<u8>)> {
        js_sys::Object::entries(files)
            .iter()
            .map(|pair| {
                let pair = js_sys::Array::from(&pair);
                let name = pair.get(0).as_string().unwrap_or_default();
                (name, js_sys::Uint8Array::new(&pair.get(1)).to_vec())
            })
            .collect()
    }

    /// A bot being trained in the tab on a person's posts ([`recipe::in_the_tab`]), a step at a
    /// time: the worker calls [`WasmTraining::step`] between messages, so Stop gets through.
    #[wasm_bindgen]
    pub struct WasmTraining {
        run: Option<recipe::Run>,
    }

    #[wasm_bindgen]
    impl WasmTraining {
        /// Sets up training on `posts` by fine-tuning the model of `files` (`{name: Uint8Array}`,
        /// its folder's files), which the card calls `name`; `steps`, when given, replaces the
        /// recipe's length (a short run, for tests). Tokenizes the posts and measures the starting
        /// model on the held-out ones, which takes a moment.
        #[wasm_bindgen(constructor)]
        pub fn new(
            posts: &WasmPosts,
            name: &str,
            files: js_sys::Object,
            steps: Option<usize>,
        ) -> Result<WasmTraining, JsError> {
            let named = named_bytes(&files);
            let base = crate::ModelFiles::from_lookup(|n| {
                named
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, b)| b.as_slice())
            });
            let mut recipe = recipe::in_the_tab(base, name);
            if let Some(steps) = steps {
                recipe.length = crate::train::Length::Steps(steps);
            }
            let run = recipe::Run::new(posts.users.clone(), &recipe).map_err(js_err)?;
            Ok(WasmTraining { run: Some(run) })
        }

        fn run(&mut self) -> Result<&mut recipe::Run, JsError> {
            self.run
                .as_mut()
                .ok_or_else(|| js_err("this training has finished"))
        }

        /// `{steps, train_tokens, heldout_tokens, start_perplexity}`: what the run will do.
        pub fn plan(&mut self) -> Result<JsValue, JsError> {
            let run = self.run()?;
            let (train_tokens, heldout_tokens) = run.token_counts();
            to_js(&serde_json::json!({
                "steps": run.steps(),
                "train_tokens": train_tokens,
                "heldout_tokens": heldout_tokens,
                "start_perplexity": run.start_loss().map(f64::exp),
            }))
        }

        /// Whether every step is done.
        #[wasm_bindgen(js_name = isDone)]
        pub fn is_done(&mut self) -> Result<bool, JsError> {
            Ok(self.run()?.is_done())
        }

        /// The next step: `{step, loss, learning_rate, tokens}`.
        pub fn step(&mut self) -> Result<JsValue, JsError> {
            let r = self.run()?.step().map_err(js_err)?;
            to_js(&serde_json::json!({
                "step": r.step, "loss": r.loss, "learning_rate": r.learning_rate, "tokens": r.tokens,
            }))
        }

        /// Measures the trained model and makes the bot's folder (the training is spent); `seconds`
        /// is how long it all took, for the card.
        pub fn finish(&mut self, seconds: f64) -> Result<WasmTrainedBot, JsError> {
            let run = self
                .run
                .take()
                .ok_or_else(|| js_err("this training has finished"))?;
            Ok(WasmTrainedBot {
                bot: run.finish(seconds).map_err(js_err)?,
            })
        }
    }

    /// A bot trained in the tab: its folder's files, its card, and the folder as a zip.
    #[wasm_bindgen]
    pub struct WasmTrainedBot {
        bot: recipe::TrainedBot,
    }

    #[wasm_bindgen]
    impl WasmTrainedBot {
        /// The names of its files (config.json, model.safetensors, tokenizer.json, README.md).
        pub fn names(&self) -> Vec<String> {
            self.bot
                .files
                .iter()
                .map(|(n, _)| (*n).to_owned())
                .collect()
        }

        /// One file's bytes (a copy).
        pub fn file(&self, name: &str) -> Option<Vec<u8>> {
            self.bot.file(name).map(<[u8]>::to_vec)
        }

        /// Its @handle, which also names its folder.
        #[wasm_bindgen(getter)]
        pub fn handle(&self) -> String {
            self.bot.handle.clone()
        }

        /// `{perplexity, start_perplexity, unigram_perplexity, steps, seconds}` from its card.
        pub fn figures(&self) -> Result<JsValue, JsError> {
            let f = &self.bot.figures;
            to_js(&serde_json::json!({
                "perplexity": f.heldout_loss.exp(),
                "start_perplexity": f.start_loss.map(f64::exp),
                "unigram_perplexity": f.unigram_loss.exp(),
                "steps": f.steps,
                "seconds": f.seconds,
            }))
        }
    }
}
