//! The huggingtweets recipe, from posts to a bot's folder: read and clean each user's posts,
//! shuffle them into one training text, pick or learn a tokenizer, train (from scratch or from a
//! model), measure the held-out loss against a unigram baseline, write the HF files with
//! huggingtweets' generation settings, and let the written bot draw its card's samples.
//!
//! No files, threads or clocks: data arrives as bytes, time comes from the caller's clock,
//! progress leaves through [`Hooks`], and the bot leaves as named bytes. The CLI (`botcard
//! train`) and the page's worker both run this.

use serde_json::{json, Value};

use crate::archive::Archive;
use crate::card::{self, CardNotes, TrainingFigures};
use crate::config::Config;
use crate::dataset::{self, UserPosts};
use crate::error::{Error, Result};
use crate::files::{self, ModelFiles};
use crate::train::{Length, Size, StepReport, TrainOptions, Trainer};
use crate::weights::Precision;
use crate::{Bot, Tokenizer};

/// The prompt of every huggingtweets card's widget and of the samples a card shows.
pub const SAMPLE_PROMPT: &str = "My dream is";

/// How many samples a new bot's card shows.
pub const CARD_SAMPLES: usize = 3;

/// Vocabulary learned from the posts when training from scratch with no tokenizer given: small
/// enough to keep a small bot small (8,192 × 256 embeddings are 2 M weights), large enough for
/// whole common words. The default bot uses it.
pub const DEFAULT_VOCAB_SIZE: usize = 8192;

/// The generation settings huggingtweets put in every bot's `config.json`, so the HF widget and
/// pipeline sample tweets rather than greedy text.
pub fn huggingtweets_task_params() -> Value {
    json!({"text-generation": {"do_sample": true, "min_length": 10, "max_length": 160,
        "temperature": 1.0, "top_p": 0.95, "prefix": "<|endoftext|>"}})
}

/// One data file: what it holds, whose posts they are, and a label for messages (its path).
#[derive(Debug, Clone)]
pub struct DataFile<'a> {
    /// Whose posts these are; `None`: the account an X archive names, else the file's name
    /// ([`dataset::user_name`]).
    pub user: Option<String>,
    pub label: String,
    pub data: Data<'a>,
}

/// A data file's contents.
#[derive(Debug, Clone)]
pub enum Data<'a> {
    /// A `tweets.js`, JSON Lines, fortune or text file ([`dataset::read_posts`]).
    Bytes(&'a [u8]),
    /// An X archive, read with [`archive::read`].
    Archive(&'a Archive),
}

impl<'a> DataFile<'a> {
    /// A file of posts by `user`.
    pub fn posts(user: &str, label: &str, bytes: &'a [u8]) -> Self {
        Self {
            user: Some(user.to_owned()),
            label: label.to_owned(),
            data: Data::Bytes(bytes),
        }
    }
}

/// What training starts from.
#[derive(Clone)]
pub enum Start<'a> {
    /// A new GPT-2 of `size`, with a byte-level BPE of `vocab_size` tokens learned from the posts.
    Scratch { size: Size, vocab_size: usize },
    /// A new GPT-2 of `size` with the tokenizer of these files.
    ScratchWithTokenizer { size: Size, files: ModelFiles<'a> },
    /// Fine-tune this model (its config, weights and tokenizer); `name` says which in the card.
    FineTune { files: ModelFiles<'a>, name: String },
}

/// Everything `botcard train` can be told.
#[derive(Clone)]
pub struct Recipe<'a> {
    pub start: Start<'a>,
    pub length: Length,
    pub batch_size: usize,
    pub block_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    /// The bot's @handle; by default [`default_handle`].
    pub handle: Option<String>,
    /// Where the posts come from and their license (markdown), for the card.
    pub about: Option<String>,
    /// How `model.safetensors` stores the weights.
    pub precision: Precision,
    /// Where the bot is made, as its card says.
    pub maker: card::Maker,
}

impl Default for Recipe<'_> {
    fn default() -> Self {
        let t = TrainOptions::default();
        Self {
            start: Start::Scratch {
                size: Size::Tiny,
                vocab_size: DEFAULT_VOCAB_SIZE,
            },
            length: t.length,
            batch_size: t.batch_size,
            block_size: t.block_size,
            learning_rate: t.learning_rate,
            seed: t.seed,
            handle: None,
            about: None,
            precision: Precision::F32,
            maker: card::Maker::Cli,
        }
    }
}

/// How the page trains a person's bot: fine-tune `base` (the page's default bot, a GPT-2 that
/// already writes English) on their posts, a few passes over them, in a fixed number of steps
/// at most so that a large archive still trains in minutes on 2 cores, stored as f16 (half the
/// bytes to keep in the browser). `botcard train --init <base> --epochs 8 --steps 120
/// --batch-size 8 --block-size 128 --lr 1e-3 --seed 0 --dtype f16` runs the same recipe.
pub fn in_the_tab<'a>(base: ModelFiles<'a>, name: &str) -> Recipe<'a> {
    Recipe {
        start: Start::FineTune {
            files: base,
            name: name.to_owned(),
        },
        length: Length::EpochsUpTo(8.0, 120),
        batch_size: 8,
        block_size: 128,
        learning_rate: 1e-3,
        seed: 0,
        precision: Precision::F16,
        maker: card::Maker::Browser,
        ..Recipe::default()
    }
}

/// What the recipe reports while it runs.
#[derive(Debug)]
pub enum Event<'a> {
    /// The posts were read, cleaned and counted.
    Data(&'a [UserPosts]),
    /// Training is about to start.
    Plan {
        train_tokens: usize,
        heldout_tokens: usize,
        steps: usize,
    },
    /// One optimisation step is done.
    Step(StepReport),
    /// Training is done; the held-out measurement and the samples follow.
    Finishing,
}

/// The caller's side of a run: where events go, whether to stop, and a clock in seconds (the
/// library has none).
pub struct Hooks<'h> {
    pub on_event: &'h mut dyn FnMut(Event),
    pub cancelled: &'h dyn Fn() -> bool,
    pub seconds: &'h dyn Fn() -> f64,
}

/// A trained bot: its folder as named bytes, and what went into its card.
pub struct TrainedBot {
    /// `config.json`, `model.safetensors`, `tokenizer.json` and the card, `README.md`.
    pub files: Vec<(&'static str, Vec<u8>)>,
    pub users: Vec<UserPosts>,
    pub handle: String,
    pub figures: TrainingFigures,
    pub samples: Vec<String>,
}

impl TrainedBot {
    /// The bytes of one of its files.
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| b.as_slice())
    }
}

/// The folder name of a bot with this @handle: its letters, digits, `_`, `-` and `.`; `bot`
/// if none.
pub fn folder_name(handle: &str) -> String {
    let folder: String = handle
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_-.".contains(*c))
        .collect();
    if folder.trim_matches('.').is_empty() {
        "bot".to_owned()
    } else {
        folder
    }
}

/// A bot's folder as one zip, its files under [`folder_name`], so that unzipping gives the
/// folder. The entries are stored, not compressed: the weights would not shrink.
pub fn zip_folder<'f>(
    handle: &str,
    files: impl IntoIterator<Item = (&'f str, &'f [u8])>,
) -> Result<Vec<u8>> {
    use std::io::Write;
    let failed =
        |e: &dyn std::fmt::Display| Error::Dataset(format!("the zip could not be made ({e})"));
    let folder = folder_name(handle);
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in files {
        w.start_file(format!("{folder}/{name}"), options)
            .map_err(|e| failed(&e))?;
        w.write_all(bytes).map_err(|e| failed(&e))?;
    }
    Ok(w.finish().map_err(|e| failed(&e))?.into_inner())
}

/// Reads every file and gathers the posts of each user (files of one user are merged, in the
/// order given), then cleans and counts them. A user's handle and picture come from the first
/// of their X archives that names them.
pub fn read_users(data: &[DataFile]) -> Result<Vec<UserPosts>> {
    struct Gathered<'d> {
        name: String,
        handle: Option<&'d str>,
        avatar_url: Option<&'d str>,
        posts: Vec<String>,
    }
    let mut by_user: Vec<Gathered> = Vec::new();
    for f in data {
        let (posts, archive) = match &f.data {
            Data::Bytes(bytes) => (dataset::read_posts(bytes, &f.label)?, None),
            Data::Archive(a) => (a.posts.clone(), Some(*a)),
        };
        let name = f
            .user
            .clone()
            .or_else(|| archive.and_then(|a| a.name.clone()))
            .unwrap_or_else(|| dataset::user_name(&f.label));
        let i = match by_user.iter().position(|g| g.name == name) {
            Some(i) => i,
            None => {
                by_user.push(Gathered {
                    name,
                    handle: None,
                    avatar_url: None,
                    posts: Vec::new(),
                });
                by_user.len() - 1
            }
        };
        let g = &mut by_user[i];
        g.posts.extend(posts);
        if let Some(a) = archive {
            g.handle = g.handle.or(a.handle.as_deref());
            g.avatar_url = g
                .avatar_url
                .or(a.avatar.as_ref().and_then(|p| p.url.as_deref()));
        }
    }
    Ok(by_user
        .iter()
        .map(|g| UserPosts {
            handle: g.handle.map(str::to_owned),
            avatar_url: g.avatar_url.map(str::to_owned),
            ..dataset::curate(&g.name, &g.posts)
        })
        .collect())
}

/// The @handle of a bot of these users when none is given: each user's handle (else their name,
/// lower-cased without spaces), joined by '-' as huggingtweets joined its bots' handles.
pub fn default_handle(users: &[UserPosts]) -> String {
    users
        .iter()
        .map(|u| {
            u.handle
                .clone()
                .unwrap_or_else(|| u.name.to_lowercase().replace(' ', ""))
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Runs the whole recipe.
pub fn train_bot(data: &[DataFile], recipe: &Recipe, hooks: Hooks) -> Result<TrainedBot> {
    let start = (hooks.seconds)();
    let users = read_users(data)?;
    (hooks.on_event)(Event::Data(&users));
    let mut run = Run::new(users, recipe)?;
    let (train_tokens, heldout_tokens) = run.token_counts();
    (hooks.on_event)(Event::Plan {
        train_tokens,
        heldout_tokens,
        steps: run.steps(),
    });
    while !run.is_done() {
        if (hooks.cancelled)() {
            return Err(Error::Cancelled);
        }
        let r = run.step()?;
        (hooks.on_event)(Event::Step(r));
    }
    (hooks.on_event)(Event::Finishing);
    run.finish((hooks.seconds)() - start)
}

/// A recipe's training, a step at a time, for callers that must do other work between steps
/// (the page's worker reads Stop and reports progress there). [`train_bot`] is its loop.
pub struct Run {
    users: Vec<UserPosts>,
    tokenizer: Tokenizer,
    cfg: Config,
    trainer: Trainer,
    /// The starting model's held-out loss: measured before the first step, when it is a model
    /// (fine-tuning); a new model's is its vocabulary's uniform guess, and not measured.
    start_loss: Option<f64>,
    loss: f64,
    /// What the card says training started from.
    base: String,
    seed: u64,
    handle: Option<String>,
    about: Option<String>,
    precision: Precision,
    maker: card::Maker,
}

impl Run {
    /// Tokenizes the users' posts and sets up the model to train (learning a tokenizer first
    /// when training from scratch).
    pub fn new(users: Vec<UserPosts>, recipe: &Recipe) -> Result<Self> {
        let text = dataset::training_text(&users, recipe.seed)?;
        let tokenizer = match &recipe.start {
            Start::Scratch { vocab_size, .. } => {
                let posts: Vec<String> =
                    users.iter().flat_map(|u| u.kept.iter().cloned()).collect();
                Tokenizer::train_byte_level_bpe(&posts, *vocab_size)?
            }
            Start::ScratchWithTokenizer { files, .. } | Start::FineTune { files, .. } => {
                files.tokenizer()?
            }
        };
        let tokens = tokenizer.encode(&text)?;
        let eos = tokenizer.token_to_id(dataset::SEPARATOR).ok_or_else(|| {
            Error::Dataset(format!("the tokenizer has no {}", dataset::SEPARATOR))
        })?;
        let (cfg, init) = match &recipe.start {
            Start::FineTune { files, .. } => {
                (Config::from_json(files.config()?)?, Some(files.weights()?))
            }
            Start::Scratch { size, .. } | Start::ScratchWithTokenizer { size, .. } => {
                (size.config(tokenizer.vocab_size(), eos), None)
            }
        };
        let opts = TrainOptions {
            length: recipe.length,
            batch_size: recipe.batch_size,
            block_size: recipe.block_size,
            learning_rate: recipe.learning_rate,
            seed: recipe.seed,
            ..Default::default()
        };
        let fine_tuning = init.is_some();
        let trainer = Trainer::new(cfg.clone(), init.as_ref(), tokens, opts)?;
        let start_loss = if fine_tuning {
            Some(trainer.heldout_loss()?)
        } else {
            None
        };
        let base = match &recipe.start {
            Start::FineTune { name, .. } => format!("fine-tuned from {name}"),
            _ => format!(
                "a GPT-2 trained from scratch ({} layers, {} wide, {} positions, {} tokens)",
                cfg.n_layer, cfg.n_embd, cfg.n_positions, cfg.vocab_size
            ),
        };
        Ok(Self {
            users,
            tokenizer,
            cfg,
            trainer,
            start_loss,
            loss: f64::NAN,
            base,
            seed: recipe.seed,
            handle: recipe.handle.clone(),
            about: recipe.about.clone(),
            precision: recipe.precision,
            maker: recipe.maker,
        })
    }

    /// The posts it trains on, as read, cleaned and counted.
    pub fn users(&self) -> &[UserPosts] {
        &self.users
    }

    /// Tokens it trains on and tokens held out to measure perplexity.
    pub fn token_counts(&self) -> (usize, usize) {
        self.trainer.token_counts()
    }

    /// Steps in all.
    pub fn steps(&self) -> usize {
        self.trainer.total_steps()
    }

    /// The held-out loss of the model it started from, when that is a trained model.
    pub fn start_loss(&self) -> Option<f64> {
        self.start_loss
    }

    /// Whether every step is done.
    pub fn is_done(&self) -> bool {
        self.trainer.steps_done() >= self.steps()
    }

    /// The next optimisation step.
    pub fn step(&mut self) -> Result<StepReport> {
        let r = self.trainer.step()?;
        self.loss = r.loss;
        Ok(r)
    }

    /// Measures the trained model and writes the bot's folder, card and samples; `seconds` is
    /// the time the whole run took, for the card.
    pub fn finish(self, seconds: f64) -> Result<TrainedBot> {
        let Self {
            users,
            tokenizer,
            cfg,
            trainer,
            start_loss,
            loss,
            base,
            seed,
            handle,
            about,
            precision,
            maker,
        } = self;
        let heldout_loss = trainer.heldout_loss()?;
        let unigram_loss = trainer.unigram_heldout_loss();
        let (train_tokens, heldout_tokens) = trainer.token_counts();
        let steps = trainer.steps_done();
        let handle = handle.unwrap_or_else(|| default_handle(&users));
        let mut files: Vec<(&'static str, Vec<u8>)> = vec![
            (
                files::CONFIG,
                serde_json::to_string_pretty(&cfg.to_hf_json(Some(huggingtweets_task_params())))
                    .expect("JSON values serialize")
                    .into_bytes(),
            ),
            (files::SAFETENSORS, trainer.to_safetensors(precision)?),
            (files::TOKENIZER, tokenizer.to_json()?.into_bytes()),
        ];
        drop(trainer);
        // Samples come from the files as written, so they show what the bot's users will get
        // (f16 rounding included).
        let samples = {
            let written = ModelFiles::from_lookup(|n| {
                files
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, b)| b.as_slice())
            });
            let bot = Bot::load(&written, crate::Dtype::default())?;
            let mut settings = bot.settings();
            settings.num_return_sequences = CARD_SAMPLES;
            settings.seed = Some(seed);
            crate::generate(&bot.model, &bot.tokenizer, SAMPLE_PROMPT, settings, |_| {})?
                .into_iter()
                .map(|s| format!("{SAMPLE_PROMPT}{}", s.text))
                .collect::<Vec<_>>()
        };
        let figures = TrainingFigures {
            base,
            steps,
            final_loss: loss,
            start_loss,
            heldout_loss,
            unigram_loss,
            seconds,
            train_tokens,
            heldout_tokens,
        };
        let notes = CardNotes {
            maker,
            data_source: about,
            samples: samples.clone(),
        };
        files.push((
            files::CARD,
            card::huggingtweets_card(&users, &handle, Some(&figures), &notes).into_bytes(),
        ));
        Ok(TrainedBot {
            files,
            users,
            handle,
            figures,
            samples,
        })
    }
}
