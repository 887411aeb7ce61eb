//! Training: loss goes down, runs repeat with a seed, and the result is an HF GPT-2 folder.

use botcard::train::{Size, TrainOptions, Trainer};
use botcard::weights::Precision;
use botcard::{Bot, Config, ModelFiles, Weights};

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
        steps,
        batch_size: 4,
        block_size: 32,
        learning_rate: 3e-3,
        warmup_steps: 5,
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
    let gap = loaded_logprob_gap(&t, &st, &tokenizer_json, &tokens[..20]);
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
    let worst = loaded_logprob_gap(&t, &f16, &tokenizer_json, &tokens[..40]);
    eprintln!("f16 storage: max |Δ logprob| {worst:.2e}");
    assert!(worst < 2e-2, "{worst}");
}

/// The largest |Δ logprob| over `ids` between the trainer's own model and `safetensors` loaded
/// by the engine with the trainer's config.
fn loaded_logprob_gap(t: &Trainer, safetensors: &[u8], tokenizer_json: &[u8], ids: &[u32]) -> f32 {
    let config = serde_json::to_vec(&t.config().to_hf_json(None)).unwrap();
    let bot = Bot::load(&ModelFiles {
        config_json: Some(&config),
        model_safetensors: Some(safetensors),
        tokenizer_json: Some(tokenizer_json),
        ..Default::default()
    })
    .unwrap();
    let a = bot.model.logprobs(ids).unwrap();
    let b = t.model().logprobs(ids).unwrap();
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
