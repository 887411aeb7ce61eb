//! Training: loss goes down, runs repeat with a seed, and the result is an HF GPT-2 folder.

use botcard::train::{Length, Size, TrainOptions, Trainer};
use botcard::weights::Precision;
use botcard::{Bot, Config, ModelFiles, Weights};

use botcard::recipe::{
    train_bot, DataFile, Event, Hooks, Recipe, Start, TrainedBot, SAMPLE_PROMPT,
};

use crate::util::Files;

/// A small repetitive corpus: easy to learn a little of in a few steps.
fn corpus_tokens() -> (Vec<u32>, Vec<u8>) {
    let files = Files::of("tiny-st");
    let tokenizer_json = files.get("tokenizer.json").unwrap().to_vec();
    let tok = botcard::Tokenizer::from_tokenizer_json(&tokenizer_json).unwrap();
    let mut text = String::new();
    for i in 0..120 {
        text.push_str(&format!(
            "My dream is to see the sea with my friends number {}.<|endoftext|>The weather today is sunny and warm.<|endoftext|>",
            i % 7
        ));
    }
    (tok.encode(&text).unwrap(), tokenizer_json)
}

fn options(steps: usize) -> TrainOptions {
    TrainOptions {
        length: Length::Steps(steps),
        batch_size: 4,
        block_size: 32,
        learning_rate: 3e-3,
        warmup_steps: Some(5),
        seed: 3,
        ..Default::default()
    }
}

#[test]
fn a_few_seconds_of_training_lowers_heldout_loss() {
    let (tokens, _) = corpus_tokens();
    let cfg = Size::Tiny.config(50257, 50256);
    let mut t = Trainer::new(cfg, None, tokens, options(40)).unwrap();
    let before = t.heldout_loss().unwrap();
    assert!(
        (before - (50257f64).ln()).abs() < 0.5,
        "an untrained model is near uniform: {before}"
    );
    let mut last = f64::INFINITY;
    for _ in 0..40 {
        last = t.step().unwrap().loss;
    }
    let after = t.heldout_loss().unwrap();
    let unigram = t.unigram_heldout_loss();
    eprintln!(
        "held-out loss {before:.3} -> {after:.3} (last train loss {last:.3}, unigram {unigram:.3})"
    );
    assert!(after < before - 3.0, "held-out loss {before} -> {after}");
    assert!(
        unigram < (50257f64).ln() - 3.0,
        "token frequencies alone beat uniform: {unigram}"
    );
    assert!(
        after < unigram,
        "context beats frequencies: {after} vs {unigram}"
    );
}

#[test]
fn the_same_seed_trains_the_same_weights() {
    let (tokens, _) = corpus_tokens();
    let run = || {
        let mut t = Trainer::new(
            Size::Tiny.config(50257, 50256),
            None,
            tokens.clone(),
            options(3),
        )
        .unwrap();
        for _ in 0..3 {
            t.step().unwrap();
        }
        t.to_safetensors(Precision::F32).unwrap()
    };
    assert!(run() == run());
}

#[test]
fn the_trained_folder_loads_in_the_engine_with_hf_names_and_shapes() {
    let (tokens, tokenizer_json) = corpus_tokens();
    let cfg = Size::Tiny.config(50257, 50256);
    let mut t = Trainer::new(cfg.clone(), None, tokens.clone(), options(2)).unwrap();
    t.step().unwrap();
    let st = t.to_safetensors(Precision::F32).unwrap();
    let names = safetensors::SafeTensors::deserialize(&st).unwrap();
    let mut keys: Vec<String> = names.names().into_iter().map(str::to_owned).collect();
    keys.sort();
    assert!(keys.contains(&"transformer.h.1.attn.c_attn.weight".to_owned()));
    assert_eq!(
        names
            .tensor("transformer.h.0.mlp.c_fc.weight")
            .unwrap()
            .shape(),
        [64, 256],
        "Conv1D is [in, out]"
    );
    assert!(
        !keys.iter().any(|k| k.starts_with("lm_head")),
        "tied lm_head is not stored"
    );
    let config = serde_json::to_vec(&cfg.to_hf_json(None)).unwrap();
    assert_eq!(Config::from_json(&config).unwrap(), cfg);
    // The loaded copy computes what the trainer's own model computes.
    let gap = loaded_logprob_gap(&t, &cfg, &st, &tokenizer_json, &tokens[..20]);
    assert!(gap < 1e-4, "{gap}");
    // Fine-tuning starts from a checkpoint of the same config.
    let w = Weights::from_safetensors(&st).unwrap();
    let t2 = Trainer::new(cfg, Some(&w), tokens, options(1)).unwrap();
    assert_eq!(t2.to_safetensors(Precision::F32).unwrap(), st);
}

#[test]
fn f16_weights_take_half_the_bytes_and_compute_nearly_the_same() {
    let (tokens, tokenizer_json) = corpus_tokens();
    let cfg = Size::Tiny.config(50257, 50256);
    let mut t = Trainer::new(cfg.clone(), None, tokens.clone(), options(3)).unwrap();
    for _ in 0..3 {
        t.step().unwrap();
    }
    let f32 = t.to_safetensors(Precision::F32).unwrap();
    let f16 = t.to_safetensors(Precision::F16).unwrap();
    let st = safetensors::SafeTensors::deserialize(&f16).unwrap();
    assert_eq!(
        st.tensor("transformer.wte.weight").unwrap().dtype(),
        safetensors::Dtype::F16
    );
    let ratio = f16.len() as f64 / f32.len() as f64;
    assert!((0.49..0.51).contains(&ratio), "{ratio}");
    let worst = loaded_logprob_gap(&t, &cfg, &f16, &tokenizer_json, &tokens[..40]);
    eprintln!("f16 storage: max |Δ logprob| {worst:.2e}");
    assert!(worst < 2e-2, "{worst}");
}

/// The largest |Δ logprob| over `ids` between the trainer's own model and `safetensors` loaded
/// by the engine with the trainer's config `cfg`.
fn loaded_logprob_gap(
    t: &Trainer,
    cfg: &Config,
    safetensors: &[u8],
    tokenizer_json: &[u8],
    ids: &[u32],
) -> f32 {
    let config = serde_json::to_vec(&cfg.to_hf_json(None)).unwrap();
    let bot = Bot::load(
        &ModelFiles::from_lookup(|name| match name {
            "config.json" => Some(config.as_slice()),
            "model.safetensors" => Some(safetensors),
            "tokenizer.json" => Some(tokenizer_json),
            _ => None,
        }),
        botcard::Dtype::F32,
    )
    .unwrap();
    let a = bot.model.logprobs(ids).unwrap();
    let b = t.model().logprobs(ids).unwrap();
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Posts of one made-up user, as JSON Lines: enough text to train on, a few retweets and short
/// posts for the counts.
fn jsonl_posts(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            let text = match i % 9 {
                0 => format!("RT @friend: look at harbour photo {i}"),
                4 => "so true".to_owned(),
                _ => format!("The ferry number {i} left the harbour at dawn with gulls behind it"),
            };
            serde_json::json!({ "full_text": text }).to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
}

/// One user's posts as the recipe's input.
fn alice(posts: &[u8]) -> [DataFile<'_>; 1] {
    [DataFile::posts("Alice", "a.jsonl", posts)]
}

fn tiny_recipe<'a>() -> Recipe<'a> {
    Recipe {
        start: Start::Scratch {
            size: Size::Tiny,
            vocab_size: 400,
        },
        length: Length::Steps(3),
        batch_size: 2,
        block_size: 32,
        seed: 5,
        ..Default::default()
    }
}

/// Runs the recipe in-process, recording its events as short strings.
fn run_recipe(
    data: &[DataFile],
    recipe: &Recipe,
    cancel_after: Option<usize>,
) -> (botcard::Result<TrainedBot>, Vec<String>) {
    let mut events = Vec::new();
    let steps = std::cell::Cell::new(0usize);
    let result = train_bot(
        data,
        recipe,
        Hooks {
            on_event: &mut |e| {
                events.push(match e {
                    Event::Data(users) => format!("data {}", users.len()),
                    Event::Plan { steps, .. } => format!("plan {steps}"),
                    Event::Step(r) => {
                        steps.set(r.step);
                        format!("step {}", r.step)
                    }
                    Event::Finishing => "finishing".into(),
                })
            },
            cancelled: &|| cancel_after.is_some_and(|n| steps.get() >= n),
            seconds: &|| 0.0,
        },
    );
    (result, events)
}

#[test]
fn the_recipe_runs_in_process_from_posts_to_a_folder_with_a_card() {
    let (alice, bob) = (jsonl_posts(200), jsonl_posts(120));
    let data = [
        DataFile::posts("Alice", "a.jsonl", &alice),
        DataFile::posts("Bob B", "b.jsonl", &bob),
    ];
    let (bot, events) = run_recipe(&data, &tiny_recipe(), None);
    let bot = bot.unwrap();
    assert_eq!(
        events,
        [
            "data 2",
            "plan 3",
            "step 1",
            "step 2",
            "step 3",
            "finishing"
        ]
    );
    assert_eq!(bot.handle, "alice-bobb");
    assert_eq!(
        (
            bot.users[0].downloaded,
            bot.users[0].retweets,
            bot.users[0].short
        ),
        (200, 23, 22)
    );
    let names: Vec<&str> = bot.files.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "README.md"
        ]
    );
    // The vocabulary was learned from the posts (no tokenizer was given).
    let folder = ModelFiles::from_lookup(|n| bot.file(n));
    let loaded = Bot::load(&folder, botcard::Dtype::F32).unwrap();
    assert!(loaded.tokenizer.vocab_size() <= 400);
    assert_eq!(
        loaded.defaults.top_p, 0.95,
        "huggingtweets' task_specific_params"
    );
    let card = botcard::card::parse_card(bot.file("README.md").unwrap());
    assert_eq!(card.widget_text.as_deref(), Some(SAMPLE_PROMPT));
    assert_eq!(card.stats[1].kept, Some(bot.users[1].kept.len() as u64));
    assert_eq!(bot.samples.len(), botcard::recipe::CARD_SAMPLES);
    assert!(bot.samples.iter().all(|s| s.starts_with(SAMPLE_PROMPT)));
    assert_eq!(bot.figures.steps, 3);
    assert!(bot.figures.heldout_loss.is_finite());
}

#[test]
fn the_recipe_stops_when_cancelled() {
    let posts = jsonl_posts(200);
    let data = alice(&posts);
    let recipe = Recipe {
        length: Length::Steps(50),
        ..tiny_recipe()
    };
    let (result, events) = run_recipe(&data, &recipe, Some(2));
    assert!(matches!(result, Err(botcard::Error::Cancelled)), "stopped");
    assert_eq!(events.last().map(String::as_str), Some("step 2"));
}

#[test]
fn epochs_count_training_tokens_only() {
    let posts = jsonl_posts(200);
    let data = alice(&posts);
    let recipe = Recipe {
        length: Length::Epochs(1.0),
        ..tiny_recipe()
    };
    let (result, events) = run_recipe(&data, &recipe, Some(0));
    assert!(matches!(result, Err(botcard::Error::Cancelled)));
    let steps: usize = events[1].strip_prefix("plan ").unwrap().parse().unwrap();
    // One pass over the training tokens in windows of 2 × 32: the held-out 5 % is not counted.
    let tokens = {
        let users = botcard::recipe::read_users(&data).unwrap();
        let text = botcard::dataset::training_text(&users, 5).unwrap();
        let posts: Vec<String> = users[0].kept.clone();
        let tok = botcard::Tokenizer::train_byte_level_bpe(&posts, 400).unwrap();
        tok.encode(&text).unwrap().len()
    };
    let train = tokens - ((tokens as f64 * 0.05) as usize).max(33);
    assert_eq!(steps, train.div_ceil(64));
}
