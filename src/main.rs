//! `botcard`: generate, score, tokenize, train and convert with GPT-2 model folders in the HF
//! layout. It parses arguments, reads and writes files and draws progress; every rule (which
//! files make a model, the generation settings, the training recipe) is the library's.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use botcard::recipe::{self, Data, DataFile, Event, Hooks, Recipe, Start};
use botcard::settings::{Kind, SETTINGS};
use botcard::train::{Length, Size};
use botcard::{files, Bot, Dtype, ModelFiles};
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, Parser, Subcommand};
use serde_json::{json, Value};

#[cfg(not(target_arch = "wasm32"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "botcard",
    version,
    about = "huggingtweets-style GPT-2 bots: generate, score, tokenize, train, convert"
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
        #[command(flatten)]
        compute: ComputeArg,
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
    /// Write the weights (model.safetensors, or a pre-quantized model.gguf) + tokenizer.json
    /// (and the configs) from any supported layout.
    Convert {
        #[command(flatten)]
        model: ModelArg,
        /// Output folder (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// The weights: f32 or f16 as model.safetensors; q8_0, q4_0 or q4k as model.gguf.
        #[arg(long, default_value = "f32", value_parser = files::WeightsFormat::ALL.map(files::WeightsFormat::name))]
        dtype: String,
    },
}

#[derive(Args)]
struct ModelArg {
    /// Model folder: config.json, model.gguf, model.safetensors or pytorch_model.bin, tokenizer.json or
    /// vocab.json + merges.txt.
    #[arg(long)]
    model: PathBuf,
}

/// How the loaded weights are held while computing.
#[derive(Args)]
struct ComputeArg {
    /// Weights in memory: f32 (HF's exact numerics) or q8_0 (a quarter of the memory, faster).
    #[arg(long, default_value = Dtype::default().name(), value_parser = Dtype::ALL.map(Dtype::name))]
    dtype: String,
}

impl ComputeArg {
    fn dtype(&self) -> Result<Dtype> {
        Ok(Dtype::parse(&self.dtype)?)
    }
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArg,
    #[command(flatten)]
    compute: ComputeArg,
    #[arg(long, default_value = "")]
    prompt: String,
    #[command(flatten)]
    settings: SettingArgs,
    /// Print one JSON object with the sequences, their token ids, the seed (null when greedy)
    /// and timings.
    #[arg(long)]
    json: bool,
}

/// Every generation setting as an option, generated from the library's table: `--top-k 5`
/// sets `top_k`, booleans also work as bare flags, and each shorthand (`--greedy`) sets its
/// setting to its value.
struct SettingArgs(Vec<(&'static str, String)>);

impl FromArgMatches for SettingArgs {
    fn from_arg_matches(m: &ArgMatches) -> std::result::Result<Self, clap::Error> {
        let mut v = Vec::new();
        for s in SETTINGS {
            for (flag, value) in s.flags {
                if m.get_flag(flag) {
                    v.push((s.name, (*value).to_owned()));
                }
            }
            if let Some(x) = m.get_one::<String>(s.name) {
                v.push((s.name, x.clone()));
            }
        }
        Ok(Self(v))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> std::result::Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for SettingArgs {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        for s in SETTINGS {
            let long = s.name.replace('_', "-");
            let mut arg = Arg::new(s.name).long(long.clone()).help(s.help);
            arg = match s.kind {
                Kind::Bool => arg
                    .value_name("true|false")
                    .num_args(0..=1)
                    .default_missing_value("true"),
                Kind::Int => arg.value_name("N"),
                Kind::Float => arg.value_name("X"),
                Kind::Text => arg.value_name("TEXT"),
            };
            cmd = cmd.arg(arg);
            let flags: Vec<&str> = s.flags.iter().map(|(f, _)| *f).collect();
            for (flag, value) in s.flags {
                let others = flags.iter().filter(|f| *f != flag).copied();
                cmd = cmd.arg(
                    Arg::new(*flag)
                        .long(*flag)
                        .action(ArgAction::SetTrue)
                        .help(format!("Same as --{long} {value:?}"))
                        .conflicts_with(s.name)
                        .conflicts_with_all(others),
                );
            }
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

#[derive(Args)]
struct TrainArgs {
    /// Posts of one user per file: an X data archive (.zip, as X sends it), its tweets.js, .jsonl,
    /// or text with one post per line.
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
    /// Size of the byte-level BPE learned from the posts when neither --init nor --tokenizer is
    /// given (a small vocabulary keeps a small bot small) [default: 8192].
    #[arg(long, conflicts_with_all = ["init", "tokenizer"])]
    vocab_size: Option<usize>,
    #[arg(long, value_enum, default_value = "tiny")]
    size: SizeArg,
    /// Optimisation steps [default: 1000]; with --epochs, the most steps.
    #[arg(long)]
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
    /// Display names, one per data file or one for all (default: an X archive's account name, or
    /// the file's name, or its folder's for tweets.js). Files with the same name are one user's
    /// posts.
    #[arg(long)]
    name: Vec<String>,
    /// The bot's @handle (default: the archives' @handles, or the names, joined with '-').
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

/// The files of a model folder that the library wants read (the preferred format of each part).
struct Folder {
    files: Vec<(&'static str, Vec<u8>)>,
}

impl Folder {
    fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!("{}: not a model folder", dir.display());
        }
        let files = files::wanted(|name| dir.join(name).is_file())
            .into_iter()
            .map(|name| {
                let path = dir.join(name);
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("{}: cannot be read", path.display()))?;
                Ok((name, bytes))
            })
            .collect::<Result<_>>()?;
        Ok(Self { files })
    }

    fn model_files(&self) -> ModelFiles<'_> {
        ModelFiles::from_lookup(|name| {
            self.files
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, b)| b.as_slice())
        })
    }
}

fn load(dir: &Path, dtype: Dtype) -> Result<Bot> {
    let folder = Folder::read(dir)?;
    Bot::load(&folder.model_files(), dtype).with_context(|| format!("{}", dir.display()))
}

/// Writes named files into `out`, creating it. They are written to a scratch folder beside it
/// first and moved in only once all are written, so a failure (a full disk) leaves no
/// half-written model behind: `out` gets every file or none.
fn write_folder<'a>(
    out: &Path,
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<()> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent)
        .with_context(|| format!("{}: cannot create", parent.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix(".botcard-partial-")
        .tempdir_in(parent)
        .with_context(|| format!("{}: cannot write", parent.display()))?;
    let mut names = Vec::new();
    for (name, bytes) in files {
        let path = scratch.path().join(name);
        std::fs::write(&path, bytes)
            .with_context(|| format!("{}: cannot write", out.join(name).display()))?;
        names.push(name);
    }
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    for name in names {
        std::fs::rename(scratch.path().join(name), out.join(name))
            .with_context(|| format!("{}: cannot write", out.join(name).display()))?;
    }
    Ok(())
}

fn generate(a: GenerateArgs) -> Result<()> {
    let bot = load(&a.model.model, a.compute.dtype()?)?;
    let mut p = bot.settings();
    for (name, value) in &a.settings.0 {
        p.set(name, &Value::String(value.clone()))?;
    }
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
            "seed": session.seed(),
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

fn score(dir: &Path, compute: &ComputeArg, text: &str, as_json: bool) -> Result<()> {
    let bot = load(dir, compute.dtype()?)?;
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

fn convert(dir: &Path, out: &Path, dtype: &str) -> Result<()> {
    let folder = Folder::read(dir)?;
    let converted = folder
        .model_files()
        .to_preferred(files::WeightsFormat::parse(dtype)?)
        .with_context(|| format!("{}", dir.display()))?;
    write_folder(out, converted.iter().map(|(n, b)| (*n, b.as_slice())))?;
    let card = dir.join(files::CARD);
    if card.is_file() {
        let bytes =
            std::fs::read(&card).with_context(|| format!("{}: cannot be read", card.display()))?;
        write_folder(out, [(files::CARD, bytes.as_slice())])?;
    }
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// A data file as read: an X archive's posts and account, or a file's bytes.
enum Loaded {
    Bytes(Vec<u8>),
    Archive(botcard::archive::Archive),
}

fn train(a: TrainArgs) -> Result<()> {
    if a.name.len() > 1 && a.name.len() != a.data.len() {
        bail!(
            "--name was given {} times for {} data files (give it once per file, or once for all)",
            a.name.len(),
            a.data.len()
        );
    }
    let loaded = a
        .data
        .iter()
        .map(|p| {
            let label = p.display().to_string();
            let cannot = || format!("{label}: cannot be read");
            let mut file = std::fs::File::open(p).with_context(cannot)?;
            let mut head = [0u8; 4];
            let n = file.read(&mut head).with_context(cannot)?;
            if botcard::archive::is_zip(&head[..n]) {
                file.rewind().with_context(cannot)?;
                let archive = botcard::archive::read(std::io::BufReader::new(file), &label)?;
                return Ok(Loaded::Archive(archive));
            }
            // Refused before reading: a file too large to train from is not read into memory.
            let len = file.metadata().with_context(cannot)?.len();
            if let Some(e) = botcard::dataset::too_large(&label, len) {
                return Err(e.into());
            }
            Ok(Loaded::Bytes(std::fs::read(p).with_context(cannot)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let data: Vec<DataFile> = a
        .data
        .iter()
        .zip(&loaded)
        .enumerate()
        .map(|(i, (path, loaded))| DataFile {
            user: match a.name.as_slice() {
                [one] => Some(one.clone()),
                names => names.get(i).cloned(),
            },
            label: path.display().to_string(),
            data: match loaded {
                Loaded::Bytes(bytes) => Data::Bytes(bytes),
                Loaded::Archive(archive) => Data::Archive(archive),
            },
        })
        .collect();
    let base = a
        .init
        .as_ref()
        .or(a.tokenizer.as_ref())
        .map(|d| Folder::read(d))
        .transpose()?;
    let size = match a.size {
        SizeArg::Tiny => Size::Tiny,
        SizeArg::Small => Size::Small,
        SizeArg::Base => Size::Base,
    };
    let start = match (&a.init, &base) {
        (Some(dir), Some(f)) => Start::FineTune {
            files: f.model_files(),
            name: dir.display().to_string(),
        },
        (None, Some(f)) => Start::ScratchWithTokenizer {
            size,
            files: f.model_files(),
        },
        _ => Start::Scratch {
            size,
            vocab_size: a.vocab_size.unwrap_or(recipe::DEFAULT_VOCAB_SIZE),
        },
    };
    let defaults = Recipe::default();
    let recipe = Recipe {
        start,
        length: match (a.steps, a.epochs) {
            (Some(s), Some(e)) => Length::EpochsUpTo(e, s),
            (Some(s), None) => Length::Steps(s),
            (None, Some(e)) => Length::Epochs(e),
            (None, None) => defaults.length,
        },
        batch_size: a.batch_size,
        block_size: a.block_size,
        learning_rate: a.lr,
        seed: a.seed,
        handle: a.handle.clone(),
        about: a.about.clone(),
        precision: a.dtype.into(),
        maker: defaults.maker,
    };

    let clock = Instant::now();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
            .expect("valid template"),
    );
    let (mut seen, mut steps, mut train_start) = (0usize, 0usize, 0.0f64);
    let mut on_event = |e: Event| match e {
        Event::Data(users) => {
            for u in users {
                eprintln!(
                    "{}: {} downloaded, {} retweets, {} short, {} kept",
                    u.name,
                    u.downloaded,
                    u.retweets,
                    u.short,
                    u.kept.len()
                );
            }
        }
        Event::Plan {
            train_tokens,
            heldout_tokens,
            steps: n,
        } => {
            eprintln!("{train_tokens} training tokens, {heldout_tokens} held out; {n} steps");
            steps = n;
            bar.set_length(n as u64);
            train_start = clock.elapsed().as_secs_f64();
        }
        Event::Step(r) => {
            seen += r.tokens;
            let elapsed = clock.elapsed().as_secs_f64() - train_start;
            let rate = seen as f64 / elapsed;
            bar.set_message(format!("loss {:.3}  {rate:.0} tok/s", r.loss));
            bar.inc(1);
            // Without a terminal (CI, nohup) the bar is hidden: a line every 5 % instead.
            if bar.is_hidden() && (r.step % (steps / 20).max(1) == 0 || r.step == steps) {
                let left = elapsed / r.step as f64 * (steps - r.step) as f64;
                eprintln!(
                    "step {}/{steps}  loss {:.3}  {rate:.0} tok/s  ETA {left:.0} s",
                    r.step, r.loss
                );
            }
        }
        Event::Finishing => bar.finish(),
    };
    let bot = recipe::train_bot(
        &data,
        &recipe,
        Hooks {
            on_event: &mut on_event,
            cancelled: &|| false,
            seconds: &|| clock.elapsed().as_secs_f64(),
        },
    )?;
    let f = &bot.figures;
    let before = f
        .start_loss
        .map(|l| format!("before training {:.1}; ", l.exp()))
        .unwrap_or_default();
    eprintln!(
        "held-out loss {:.3}, perplexity {:.1} ({before}unigram baseline {:.1})",
        f.heldout_loss,
        f.heldout_loss.exp(),
        f.unigram_loss.exp()
    );
    write_folder(&a.out, bot.files.iter().map(|(n, b)| (*n, b.as_slice())))?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => generate(a),
        Command::Score {
            model,
            compute,
            text,
            json,
        } => score(&model.model, &compute, &text, json),
        Command::Tokenize { model, text, json } => tokenize(&model.model, &text, json),
        Command::Train(a) => train(a),
        Command::Convert { model, out, dtype } => convert(&model.model, &out, &dtype),
    };
    if let Err(e) = result {
        // One line: the chain of contexts, outermost first ("DIR: model.safetensors: ...").
        let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        eprintln!("botcard: {}", msg.join(": "));
        std::process::exit(1);
    }
}
