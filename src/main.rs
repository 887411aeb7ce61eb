//! `botcard`: generate, score, tokenize and convert with a GPT-2 model folder in the HF layout.
//! Uses only the library's public API; reading files is this program's job, not the library's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use botcard::{Bot, ModelFiles, ParamOverrides};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

#[cfg(not(target_arch = "wasm32"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "botcard",
    version,
    about = "huggingtweets-style GPT-2 bots: generate, score, tokenize, convert"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write text after a prompt; defaults come from the model like the HF pipeline.
    Generate(GenerateArgs),
    /// Log-probability of each token of a text given the ones before it.
    Score {
        #[command(flatten)]
        model: ModelArg,
        #[arg(long)]
        text: String,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Token ids and token strings of a text.
    Tokenize {
        #[command(flatten)]
        model: ModelArg,
        #[arg(long)]
        text: String,
        #[arg(long)]
        json: bool,
    },
    /// Train a bot on posts (X archive tweets.js, JSONL or text; one file per user) and write
    /// a model folder with its huggingtweets card.
    Train(TrainArgs),
    /// Write model.safetensors + tokenizer.json (and the configs) from any supported layout.
    Convert {
        #[command(flatten)]
        model: ModelArg,
        /// Output folder (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// How model.safetensors stores the weights.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: DtypeArg,
    },
}

#[derive(Args)]
struct ModelArg {
    /// Model folder: config.json, model.safetensors or pytorch_model.bin, tokenizer.json or
    /// vocab.json + merges.txt.
    #[arg(long)]
    model: PathBuf,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArg,
    #[arg(long, default_value = "")]
    prompt: String,
    #[arg(long)]
    max_new_tokens: Option<usize>,
    #[arg(long)]
    min_new_tokens: Option<usize>,
    /// 0 means greedy.
    #[arg(long)]
    temperature: Option<f32>,
    /// 0 turns top-k off.
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f64>,
    #[arg(long)]
    repetition_penalty: Option<f32>,
    #[arg(long)]
    no_repeat_ngram_size: Option<usize>,
    #[arg(long)]
    num_return_sequences: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Always pick the most likely token (do_sample off).
    #[arg(long)]
    greedy: bool,
    /// Sample even if the model's defaults say greedy.
    #[arg(long, conflicts_with = "greedy")]
    sample: bool,
    /// Do not put the model's prefix (huggingtweets: <|endoftext|>) before the prompt.
    #[arg(long)]
    no_prefix: bool,
    /// End each sequence at its first newline, one tweet per sequence.
    #[arg(long)]
    stop_at_newline: bool,
    /// Print one JSON object with the sequences, their token ids and timings.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TrainArgs {
    /// Posts of one user per file: tweets.js from an X archive, .jsonl, or text with one post per line.
    #[arg(long, required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Fine-tune this HF GPT-2 folder instead of starting from scratch.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Folder with the tokenizer for training from scratch (tokenizer.json or vocab.json + merges.txt).
    #[arg(long, conflicts_with = "init")]
    tokenizer: Option<PathBuf>,
    /// Learn a byte-level BPE of this many tokens from the posts instead of using --tokenizer
    /// (a small vocabulary keeps a small bot small).
    #[arg(long, conflicts_with_all = ["init", "tokenizer"])]
    vocab_size: Option<usize>,
    #[arg(long, value_enum, default_value = "tiny")]
    size: SizeArg,
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<usize>,
    /// Passes over the training tokens (converted to steps).
    #[arg(long)]
    epochs: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[arg(long, default_value_t = 128)]
    block_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Display names, one per data file or one for all (default: the file's name, or its folder's
    /// for tweets.js). Files with the same name are one user's posts.
    #[arg(long)]
    name: Vec<String>,
    /// The bot's @handle (default: the names joined with '-').
    #[arg(long)]
    handle: Option<String>,
    /// Where the posts come from and their license (markdown), for the card's data section.
    #[arg(long)]
    about: Option<String>,
    /// How model.safetensors stores the weights (f16 halves the file).
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DtypeArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DtypeArg {
    F32,
    F16,
}

impl From<DtypeArg> for botcard::weights::Precision {
    fn from(d: DtypeArg) -> Self {
        match d {
            DtypeArg::F32 => Self::F32,
            DtypeArg::F16 => Self::F16,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SizeArg {
    Tiny,
    Small,
    Base,
}

/// Reads the files of a model folder that exist; a missing optional file is simply absent.
struct Folder {
    files: Vec<(&'static str, Vec<u8>)>,
}

impl Folder {
    fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!("{}: not a model folder", dir.display());
        }
        let mut files = Vec::new();
        for name in ModelFiles::NAMES {
            // The slower formats are only read when the faster one is absent.
            let skip = (name == "pytorch_model.bin"
                && files.iter().any(|(n, _)| *n == "model.safetensors"))
                || (matches!(name, "vocab.json" | "merges.txt")
                    && files.iter().any(|(n, _)| *n == "tokenizer.json"));
            let path = dir.join(name);
            if skip || !path.exists() {
                continue;
            }
            let bytes = std::fs::read(&path)
                .with_context(|| format!("{}: cannot be read", path.display()))?;
            files.push((name, bytes));
        }
        Ok(Self { files })
    }

    fn get(&self, name: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| b.as_slice())
    }

    fn model_files(&self) -> ModelFiles<'_> {
        ModelFiles::from_lookup(|name| self.get(name))
    }
}

fn load(dir: &Path) -> Result<Bot> {
    let folder = Folder::read(dir)?;
    Bot::load(&folder.model_files()).with_context(|| format!("{}", dir.display()))
}

fn generate(a: GenerateArgs) -> Result<()> {
    let bot = load(&a.model.model)?;
    let overrides = ParamOverrides {
        do_sample: if a.greedy {
            Some(false)
        } else if a.sample {
            Some(true)
        } else {
            None
        },
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        repetition_penalty: a.repetition_penalty,
        no_repeat_ngram_size: a.no_repeat_ngram_size,
        min_new_tokens: a.min_new_tokens,
        max_new_tokens: a.max_new_tokens,
        num_return_sequences: a.num_return_sequences,
        seed: Some(a.seed),
        use_prefix: Some(!a.no_prefix),
        stop_at_newline: Some(a.stop_at_newline),
    };
    let p = overrides.apply(bot.default_params());
    let start = Instant::now();
    let mut session = bot.session(&a.prompt, p)?;
    let prefill = start.elapsed().as_secs_f64();
    let one = session.sequence_count() == 1;
    let mut stdout = std::io::stdout().lock();
    if one && !a.json {
        write!(stdout, "{}", a.prompt)?;
    }
    let mut tokens = 0usize;
    while !session.is_done() {
        for t in bot.step(&mut session)? {
            tokens += 1;
            if one && !a.json {
                write!(stdout, "{}", t.text)?;
                stdout.flush()?;
            }
        }
    }
    let total = start.elapsed().as_secs_f64();
    let sequences = session.sequences();
    if a.json {
        let out = json!({
            "sequences": sequences,
            "prompt_ids": session.prompt_ids(),
            "generated_tokens": tokens,
            "prefill_seconds": prefill,
            "total_seconds": total,
            "tokens_per_second": tokens as f64 / (total - prefill).max(1e-9),
        });
        writeln!(stdout, "{out}")?;
    } else if one {
        writeln!(stdout)?;
    } else {
        for (i, s) in sequences.iter().enumerate() {
            writeln!(stdout, "[{}] {}{}", i + 1, a.prompt, s.text)?;
        }
    }
    Ok(())
}

fn score(dir: &Path, text: &str, as_json: bool) -> Result<()> {
    let bot = load(dir)?;
    let ids = bot.tokenizer.encode(text)?;
    let logprobs = bot.model.logprobs(&ids)?;
    let perplexity = if logprobs.is_empty() {
        f64::NAN
    } else {
        (-logprobs.iter().map(|&l| f64::from(l)).sum::<f64>() / logprobs.len() as f64).exp()
    };
    if as_json {
        let ppl = if perplexity.is_finite() {
            json!(perplexity)
        } else {
            json!(null)
        };
        println!(
            "{}",
            json!({"token_ids": ids, "logprobs": logprobs, "perplexity": ppl})
        );
    } else {
        let strings = bot.tokenizer.id_strings(&ids);
        for (i, lp) in logprobs.iter().enumerate() {
            println!(
                "{:>8} {:<20} {lp:>10.4}",
                ids[i + 1],
                format!("{:?}", strings[i + 1])
            );
        }
        println!("perplexity {perplexity:.3} over {} tokens", logprobs.len());
    }
    Ok(())
}

fn tokenize(dir: &Path, text: &str, as_json: bool) -> Result<()> {
    let folder = Folder::read(dir)?;
    let tokenizer = folder
        .model_files()
        .tokenizer()
        .with_context(|| format!("{}", dir.display()))?;
    let ids = tokenizer.encode(text)?;
    let tokens = tokenizer.id_strings(&ids);
    if as_json {
        println!("{}", json!({"token_ids": ids, "tokens": tokens}));
    } else {
        for (id, t) in ids.iter().zip(&tokens) {
            println!("{id:>8} {t:?}");
        }
    }
    Ok(())
}

fn convert(dir: &Path, out: &Path, dtype: DtypeArg) -> Result<()> {
    let folder = Folder::read(dir)?;
    let files = folder.model_files();
    let ctx = || format!("{}", dir.display());
    let config = botcard::Config::from_json(files.config().with_context(ctx)?).with_context(ctx)?;
    let weights = files.weights().with_context(ctx)?;
    let tokenizer = files.tokenizer().with_context(ctx)?;
    let safetensors =
        botcard::weights::to_safetensors(&config, &weights, dtype.into()).with_context(ctx)?;
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("{}: cannot write", path.display()))
    };
    write("model.safetensors", &safetensors)?;
    write("tokenizer.json", tokenizer.to_json()?.as_bytes())?;
    for name in ["config.json", "generation_config.json", "README.md"] {
        let src = dir.join(name);
        if src.exists() {
            let bytes = std::fs::read(&src)
                .with_context(|| format!("{}: cannot be read", src.display()))?;
            write(name, &bytes)?;
        }
    }
    eprintln!(
        "wrote {} ({} bytes of weights)",
        out.display(),
        safetensors.len()
    );
    Ok(())
}

/// A user's name from their data file: `alice.jsonl` -> alice, `archive/alice/tweets.js` -> alice.
fn user_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if stem == "tweets" || stem.starts_with("tweets-part") {
        let dir = path
            .parent()
            .and_then(Path::file_name)
            .map(|s| s.to_string_lossy().into_owned());
        if let Some(d) = dir.filter(|d| d != "data") {
            return d;
        }
    }
    stem
}

fn train(a: TrainArgs) -> Result<()> {
    use botcard::dataset;
    use botcard::train::{Size, TrainOptions, Trainer};
    let start = Instant::now();
    if a.name.len() > 1 && a.name.len() != a.data.len() {
        bail!(
            "--name was given {} times for {} data files (give it once per file, or once for all)",
            a.name.len(),
            a.data.len()
        );
    }
    // Files with the same name are one user's (an archive split into tweets-part1.js, …).
    let mut by_name: Vec<(String, Vec<String>)> = Vec::new();
    for (i, path) in a.data.iter().enumerate() {
        let bytes =
            std::fs::read(path).with_context(|| format!("{}: cannot be read", path.display()))?;
        let posts = dataset::read_posts(&bytes, &path.display().to_string())?;
        let name = match a.name.as_slice() {
            [one] => one.clone(),
            names => names.get(i).cloned().unwrap_or_else(|| user_name(path)),
        };
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, all)) => all.extend(posts),
            None => by_name.push((name, posts)),
        }
    }
    let users: Vec<_> = by_name
        .iter()
        .map(|(name, posts)| dataset::curate(name, posts))
        .collect();
    for u in &users {
        eprintln!(
            "{}: {} downloaded, {} retweets, {} short, {} kept",
            u.name,
            u.downloaded,
            u.retweets,
            u.short,
            u.kept.len()
        );
    }
    let text = dataset::training_text(&users, a.seed)?;
    let folder = match a.init.as_ref().or(a.tokenizer.as_ref()) {
        Some(dir) => Some(Folder::read(dir)?),
        None => None,
    };
    let files = folder.as_ref().map(Folder::model_files);
    let tokenizer = match (&files, a.vocab_size) {
        (Some(f), _) => f.tokenizer()?,
        (None, Some(n)) => {
            let posts: Vec<String> = users.iter().flat_map(|u| u.kept.iter().cloned()).collect();
            botcard::Tokenizer::train_byte_level_bpe(&posts, n)?
        }
        (None, None) => {
            bail!("give --init DIR to fine-tune, or --tokenizer DIR or --vocab-size N to train from scratch")
        }
    };
    let tokens = tokenizer.encode(&text)?;
    let eos = tokenizer
        .token_to_id("<|endoftext|>")
        .context("the tokenizer has no <|endoftext|>")?;
    let (cfg, weights) = match (&a.init, &files) {
        (Some(_), Some(f)) => (botcard::Config::from_json(f.config()?)?, Some(f.weights()?)),
        _ => {
            let size = match a.size {
                SizeArg::Tiny => Size::Tiny,
                SizeArg::Small => Size::Small,
                SizeArg::Base => Size::Base,
            };
            (size.config(tokenizer.vocab_size(), eos), None)
        }
    };
    let block = a.block_size.min(cfg.n_positions);
    let steps = match (a.steps, a.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => {
            let train_tokens = botcard::train::training_split(
                tokens.len(),
                block,
                TrainOptions::default().heldout_fraction,
            );
            ((e * train_tokens as f64) / (a.batch_size * block) as f64)
                .ceil()
                .max(1.0) as usize
        }
        (None, None) => 1000,
    };
    let opts = TrainOptions {
        steps,
        batch_size: a.batch_size,
        block_size: block,
        learning_rate: a.lr,
        warmup_steps: (steps / 20).max(1),
        seed: a.seed,
        ..Default::default()
    };
    let mut trainer = Trainer::new(cfg.clone(), weights.as_ref(), tokens, opts)?;
    let (train_tokens, heldout_tokens) = trainer.token_counts();
    eprintln!("{train_tokens} training tokens, {heldout_tokens} held out; {steps} steps");
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
            .expect("valid template"),
    );
    let train_start = Instant::now();
    let (mut seen, mut loss) = (0usize, f64::NAN);
    for _ in 0..steps {
        let r = trainer.step()?;
        seen += r.tokens;
        loss = r.loss;
        let rate = seen as f64 / train_start.elapsed().as_secs_f64();
        bar.set_message(format!("loss {loss:.3}  {rate:.0} tok/s"));
        bar.inc(1);
        // Without a terminal (CI, nohup) the bar is hidden: a line every 5 % instead.
        if bar.is_hidden() && (r.step % (steps / 20).max(1) == 0 || r.step == steps) {
            let left =
                train_start.elapsed().as_secs_f64() / r.step as f64 * (steps - r.step) as f64;
            eprintln!(
                "step {}/{steps}  loss {loss:.3}  {rate:.0} tok/s  ETA {:.0} s",
                r.step, left
            );
        }
    }
    bar.finish();
    let heldout = trainer.heldout_loss()?;
    let unigram = trainer.unigram_heldout_loss();
    eprintln!(
        "held-out loss {heldout:.3}, perplexity {:.1} (unigram baseline {:.1})",
        heldout.exp(),
        unigram.exp()
    );
    let figures = botcard::card::TrainingFigures {
        base: match &a.init {
            Some(d) => format!("fine-tuned from {}", d.display()),
            None => format!(
                "a GPT-2 trained from scratch ({} layers, {} wide, {} positions, {} tokens)",
                cfg.n_layer, cfg.n_embd, cfg.n_positions, cfg.vocab_size
            ),
        },
        steps,
        final_loss: loss,
        heldout_loss: heldout,
        unigram_loss: unigram,
        seconds: start.elapsed().as_secs_f64(),
        train_tokens,
        heldout_tokens,
    };
    let handle = a.handle.clone().unwrap_or_else(|| {
        users
            .iter()
            .map(|u| u.name.to_lowercase().replace(' ', ""))
            .collect::<Vec<_>>()
            .join("-")
    });
    let task = json!({"text-generation": {"do_sample": true, "min_length": 10, "max_length": 160,
        "temperature": 1.0, "top_p": 0.95, "prefix": "<|endoftext|>"}});
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("{}: cannot create", a.out.display()))?;
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = a.out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("{}: cannot write", path.display()))
    };
    write(
        "config.json",
        serde_json::to_string_pretty(&cfg.to_hf_json(Some(task)))?.as_bytes(),
    )?;
    write(
        "model.safetensors",
        &trainer.to_safetensors(a.dtype.into())?,
    )?;
    write("tokenizer.json", tokenizer.to_json()?.as_bytes())?;
    // Samples come from the folder as written, so they show what its users will get.
    let bot = load(&a.out)?;
    let params = ParamOverrides {
        num_return_sequences: Some(3),
        seed: Some(a.seed),
        ..Default::default()
    }
    .apply(bot.default_params());
    let samples = botcard::generate(&bot.model, &bot.tokenizer, "My dream is", params, |_| {})?
        .into_iter()
        .map(|s| format!("My dream is{}", s.text))
        .collect();
    let notes = botcard::card::CardNotes {
        data_source: a.about.clone(),
        samples,
    };
    write(
        "README.md",
        botcard::card::huggingtweets_card(&users, &handle, &figures, &notes).as_bytes(),
    )?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => generate(a),
        Command::Score { model, text, json } => score(&model.model, &text, json),
        Command::Tokenize { model, text, json } => tokenize(&model.model, &text, json),
        Command::Train(a) => train(a),
        Command::Convert { model, out, dtype } => convert(&model.model, &out, dtype),
    };
    if let Err(e) = result {
        // One line: the chain of contexts, outermost first ("DIR: model.safetensors: ...").
        let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        eprintln!("botcard: {}", msg.join(": "));
        std::process::exit(1);
    }
}
