//! The native half of `./build.sh bench`: loads one model folder with one dtype and prints one
//! JSON line of figures measured the way `../shared/peer` measures its engines, on the jobs of
//! `tests/bench/jobs.json` (decode tok/s = (N−1) / (time of token N − time of token 1); medians
//! of the timed runs after a warm-up).
//!
//! `cargo run --release --example bench -- MODEL_DIR DTYPE [held-out.txt]`; threads from
//! `RAYON_NUM_THREADS`. With a text file it also reports the model's perplexity on it.

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

    pub fn main() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let (dir, dtype) = match args.as_slice() {
            [dir, dtype, ..] => (dir.clone(), Dtype::parse(dtype).expect("dtype")),
            _ => panic!("usage: bench MODEL_DIR DTYPE [held-out.txt]"),
        };
        let bandwidth = copy_bandwidth();
        let t = Instant::now();
        let bytes: Vec<(&str, Vec<u8>)> = files::all_names()
            .filter_map(|n| Some((n, std::fs::read(format!("{dir}/{n}")).ok()?)))
            .collect();
        let bot = Bot::load(
            &ModelFiles::from_lookup(|n| bytes.iter().find(|(k, _)| *k == n).map(|(_, b)| &b[..])),
            dtype,
        )
        .expect("model");
        let ready = t.elapsed().as_secs_f64();
        drop(bytes);

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

        let perplexity = args.get(2).map(|path| {
            let text = std::fs::read_to_string(path).expect("held-out text");
            let ctx = bot.config.n_positions;
            let ids = bot.tokenizer.encode(&text).unwrap();
            let (mut sum, mut count) = (0f64, 0usize);
            for chunk in ids.chunks(ctx) {
                let lp = bot.model.logprobs(chunk).unwrap();
                sum += lp.iter().map(|&l| f64::from(l)).sum::<f64>();
                count += lp.len();
            }
            (-sum / count as f64).exp()
        });

        let line = json!({
            "engine": "botcard native",
            "dtype": dtype.name(),
            "threads": rayon::current_num_threads(),
            "weight_bytes": bot.model.weight_bytes(),
            "ready_s": ready,
            "prefill_tok_s": median(prefill),
            "ttft_ms": median(ttft) * 1e3,
            "decode_tok_s": median(decode),
            "widget_job_s": median(job),
            "peak_memory_bytes": peak_memory(),
            "copy_gb_s": bandwidth,
            "perplexity": perplexity,
        });
        println!("{line}");
    }
}
