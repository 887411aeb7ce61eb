//! The huggingtweets recipe, from posts to a bot's folder: read and clean each user's posts,
//! shuffle them into one training text, pick or learn a tokenizer, train (from scratch or from a
//! model), measure the held-out loss against a unigram baseline, write the HF files with
//! huggingtweets' generation settings, and let the written bot draw its card's samples.
//!
//! No files, threads or clocks: data arrives as bytes, time comes from the caller's clock,
//! progress leaves through [`Hooks`], and the bot leaves as named bytes. The CLI (`botcard
//! train`) and the page's worker both run this.

use serde_json::{json, Value};

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

/// One data file: its bytes, whose posts they are, and a label for messages (its path).
#[derive(Debug, Clone)]
pub struct DataFile<'a> {
    pub user: String,
    pub label: String,
    pub bytes: &'a [u8],
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
    /// The bot's @handle; by default the users' names, lower-cased without spaces, joined by '-'.
    pub handle: Option<String>,
    /// Where the posts come from and their license (markdown), for the card.
    pub about: Option<String>,
    /// How `model.safetensors` stores the weights.
    pub precision: Precision,
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
        }
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

/// Reads every file and gathers the posts of each user (files of one user are merged, in the
/// order given), then cleans and counts them.
pub fn read_users(data: &[DataFile]) -> Result<Vec<UserPosts>> {
    let mut by_user: Vec<(&str, Vec<String>)> = Vec::new();
    for f in data {
        let posts = dataset::read_posts(f.bytes, &f.label)?;
        match by_user.iter_mut().find(|(n, _)| *n == f.user) {
            Some((_, all)) => all.extend(posts),
            None => by_user.push((&f.user, posts)),
        }
    }
    Ok(by_user
        .iter()
        .map(|(name, posts)| dataset::curate(name, posts))
        .collect())
}

/// Runs the whole recipe.
pub fn train_bot(data: &[DataFile], recipe: &Recipe, hooks: Hooks) -> Result<TrainedBot> {
    let start = (hooks.seconds)();
    let users = read_users(data)?;
    (hooks.on_event)(Event::Data(&users));
    let text = dataset::training_text(&users, recipe.seed)?;
    let tokenizer = match &recipe.start {
        Start::Scratch { vocab_size, .. } => {
            let posts: Vec<String> = users.iter().flat_map(|u| u.kept.iter().cloned()).collect();
            Tokenizer::train_byte_level_bpe(&posts, *vocab_size)?
        }
        Start::ScratchWithTokenizer { files, .. } | Start::FineTune { files, .. } => {
            files.tokenizer()?
        }
    };
    let tokens = tokenizer.encode(&text)?;
    let eos = tokenizer
        .token_to_id(dataset::SEPARATOR)
        .ok_or_else(|| Error::Dataset(format!("the tokenizer has no {}", dataset::SEPARATOR)))?;
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
    let mut trainer = Trainer::new(cfg.clone(), init.as_ref(), tokens, opts)?;
    let (train_tokens, heldout_tokens) = trainer.token_counts();
    let steps = trainer.total_steps();
    (hooks.on_event)(Event::Plan {
        train_tokens,
        heldout_tokens,
        steps,
    });
    let mut loss = f64::NAN;
    for _ in 0..steps {
        if (hooks.cancelled)() {
            return Err(Error::Cancelled);
        }
        let r = trainer.step()?;
        loss = r.loss;
        (hooks.on_event)(Event::Step(r));
    }
    (hooks.on_event)(Event::Finishing);
    let heldout_loss = trainer.heldout_loss()?;
    let unigram_loss = trainer.unigram_heldout_loss();

    let handle = recipe.handle.clone().unwrap_or_else(|| {
        users
            .iter()
            .map(|u| u.name.to_lowercase().replace(' ', ""))
            .collect::<Vec<_>>()
            .join("-")
    });
    let mut files: Vec<(&'static str, Vec<u8>)> = vec![
        (
            files::CONFIG,
            serde_json::to_string_pretty(&cfg.to_hf_json(Some(huggingtweets_task_params())))
                .expect("JSON values serialize")
                .into_bytes(),
        ),
        (
            files::SAFETENSORS,
            trainer.to_safetensors(recipe.precision)?,
        ),
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
        settings.seed = Some(recipe.seed);
        crate::generate(&bot.model, &bot.tokenizer, SAMPLE_PROMPT, settings, |_| {})?
            .into_iter()
            .map(|s| format!("{SAMPLE_PROMPT}{}", s.text))
            .collect::<Vec<_>>()
    };
    let figures = TrainingFigures {
        base: match &recipe.start {
            Start::FineTune { name, .. } => format!("fine-tuned from {name}"),
            _ => format!(
                "a GPT-2 trained from scratch ({} layers, {} wide, {} positions, {} tokens)",
                cfg.n_layer, cfg.n_embd, cfg.n_positions, cfg.vocab_size
            ),
        },
        steps,
        final_loss: loss,
        heldout_loss,
        unigram_loss,
        seconds: (hooks.seconds)() - start,
        train_tokens,
        heldout_tokens,
    };
    let notes = CardNotes {
        data_source: recipe.about.clone(),
        samples: samples.clone(),
    };
    files.push((
        files::CARD,
        card::huggingtweets_card(&users, &handle, &figures, &notes).into_bytes(),
    ));
    Ok(TrainedBot {
        files,
        users,
        handle,
        figures,
        samples,
    })
}
