//! Prefill and decode speed of a GPT-2 124M (the real shapes, random weights), the baseline for
//! speed work. `cargo bench --bench decode`; compare ratios within one run, not absolute times.

use botcard::{Bot, ModelFiles};
use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// GPT-2 124M: 12 layers, 12 heads, 768 wide, 1024 positions, 50257 tokens.
const CONFIG: &str = r#"{"model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024, "n_embd": 768,
    "n_layer": 12, "n_head": 12, "activation_function": "gelu_new"}"#;

/// model.safetensors bytes with small pseudo-random values (a fixed LCG: fast and repeatable).
fn random_weights(cfg: &botcard::Config) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let tensors: Vec<(String, Tensor)> = botcard::weights::expected_tensors(cfg)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04
                })
                .collect();
            (name, Tensor::from_vec(values, shape, &Device::Cpu).unwrap())
        })
        .collect();
    botcard::weights::serialize(&tensors, botcard::weights::Precision::F32).unwrap()
}

fn bench(c: &mut Criterion) {
    let cfg = botcard::Config::from_json(CONFIG.as_bytes()).unwrap();
    let weights = random_weights(&cfg);
    let root = env!("CARGO_MANIFEST_DIR");
    let tokenizer = std::fs::read(format!(
        "{root}/tests/fixtures/models/tiny-st/tokenizer.json"
    ))
    .unwrap();
    let bot = Bot::load(&ModelFiles::from_lookup(|name| match name {
        "config.json" => Some(CONFIG.as_bytes()),
        "model.safetensors" => Some(&weights),
        "tokenizer.json" => Some(&tokenizer),
        _ => None,
    }))
    .unwrap();
    drop(weights);
    let prompt: Vec<u32> = (0..64).map(|i| 1000 + i * 37).collect();

    let mut g = c.benchmark_group("gpt2-124M");
    g.sample_size(10);
    for t in [16, 64] {
        g.throughput(Throughput::Elements(t as u64));
        g.bench_function(format!("prefill {t} tokens"), |b| {
            b.iter(|| {
                let mut cache = bot.model.new_cache(t);
                bot.model
                    .next_logits(&[prompt[..t].to_vec()], &mut cache)
                    .unwrap()
            })
        });
    }
    for batch in [1, 4] {
        // One iteration: prefill 16 tokens, then 32 decode steps; subtract the prefill above.
        g.throughput(Throughput::Elements(32 * batch as u64));
        g.bench_function(format!("prefill 16 + decode 32, batch {batch}"), |b| {
            b.iter(|| {
                let mut cache = bot.model.new_cache(48);
                let mut rows = vec![prompt[..16].to_vec(); batch];
                let mut logits = bot.model.next_logits(&rows, &mut cache).unwrap();
                for _ in 0..32 {
                    let next: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
                    rows = next.into_iter().map(|id| vec![id]).collect();
                    logits = bot.model.next_logits(&rows, &mut cache).unwrap();
                }
                logits
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
