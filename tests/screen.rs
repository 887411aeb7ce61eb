//! The screen of an f32 output matrix (`src/screen.rs`): the logits it computes are the exact
//! ones, and every logit it leaves out (−∞) is below the `k` largest of the rest, so a sampler
//! keeping `k` tokens picks what it picks from the full logits.

use botcard::dense;
use botcard::screen::Screen;

/// Values from a fixed generator, Gaussian-like with standard deviation `scale`.
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (0..n)
        .map(|_| (next() + next() + next() + next()) * scale * 1.7)
        .collect()
}

/// Checks `Screen::logits` against every exact logit for one matrix and activation rows.
fn check(w: &[f32], rows: usize, cols: usize, x: &[f32], m: usize, k: usize, exact: &[&[u32]]) {
    let screen = Screen::new(w, rows, cols).unwrap().expect("a screen");
    let got = screen.logits(w, x, m, k, exact);
    assert_eq!(got.len(), m);
    for (i, g) in got.iter().enumerate() {
        let h = &x[i * cols..(i + 1) * cols];
        let full: Vec<f32> = w.chunks_exact(cols).map(|r| dense::dot(r, h)).collect();
        let fixed = |t: usize| exact.get(i).is_some_and(|e| e.contains(&(t as u32)));
        let mut rest: Vec<f32> = (0..rows).filter(|&t| !fixed(t)).map(|t| full[t]).collect();
        rest.sort_by(|a, b| b.total_cmp(a));
        let kth = rest.get(k.max(1) - 1).copied().unwrap_or(f32::NEG_INFINITY);
        let mut kept = 0;
        for t in 0..rows {
            if g[t] == f32::NEG_INFINITY && full[t] != f32::NEG_INFINITY {
                assert!(!fixed(t), "row {i}: token {t} must be exact");
                assert!(
                    full[t] < kth,
                    "row {i}: token {t} ({}) left out, k-th {kth}",
                    full[t]
                );
            } else {
                assert_eq!(g[t].to_bits(), full[t].to_bits(), "row {i}: token {t}");
                kept += 1;
            }
        }
        assert!(
            kept >= k.min(rows),
            "row {i}: {kept} logits kept for k = {k}"
        );
    }
}

#[test]
fn screened_logits_keep_every_token_a_top_k_sampler_can_pick() {
    let (rows, cols) = (3000, 96);
    let w = values(rows * cols, 1, 0.02);
    // Activations as a final layer norm leaves them (about unit scale), and one row far
    // larger with outliers, where the activations' quantization error is largest.
    let mut x = values(3 * cols, 2, 1.0);
    for v in &mut x[2 * cols..] {
        *v *= 40.0;
    }
    x[2 * cols + 5] = 3000.0;
    for k in [1, 2, 50, 2999, 3000, 5000] {
        check(&w, rows, cols, &x, 3, k, &[]);
    }
    // The tokens a sampler's processors change are always exact, and do not count towards k.
    let context: Vec<u32> = (0..40).map(|i| i * 71 % 3000).collect();
    check(&w, rows, cols, &x, 3, 50, &[&context, &[], &context]);
    check(&w, rows, cols, &x, 3, 1, &[&[7], &[7], &[7]]);
}

#[test]
fn tied_logits_are_all_kept() {
    // Rows repeated: logits tie exactly, and a top-k keeps every token tied with its k-th.
    let (rows, cols) = (1200, 64);
    let base = values(40 * cols, 3, 0.05);
    let w: Vec<f32> = (0..rows)
        .flat_map(|r| base[(r % 40) * cols..(r % 40 + 1) * cols].to_vec())
        .collect();
    let x = values(2 * cols, 4, 1.0);
    for k in [1, 3, 30] {
        check(&w, rows, cols, &x, 2, k, &[]);
    }
}

#[test]
fn a_peaked_distribution_needs_few_exact_logits() {
    // A trained model's logits: one row aligned with the activations stands far above the rest.
    let (rows, cols) = (5000, 128);
    let mut w = values(rows * cols, 5, 0.02);
    let x = values(cols, 6, 1.0);
    for (c, v) in w[17 * cols..18 * cols].iter_mut().enumerate() {
        *v = x[c] * 0.2;
    }
    check(&w, rows, cols, &x, 1, 1, &[]);
    let screen = Screen::new(&w, rows, cols).unwrap().unwrap();
    let got = &screen.logits(&w, &x, 1, 1, &[])[0];
    let computed = got.iter().filter(|v| v.is_finite()).count();
    assert!(computed < 10, "{computed} logits computed exactly");
}

#[test]
fn no_screen_where_q8_0_cannot_hold_the_matrix() {
    assert!(Screen::new(&[0.5; 40], 2, 20).unwrap().is_none());
    let mut w = values(64, 7, 1.0);
    w[3] = f32::NAN;
    assert!(Screen::new(&w, 2, 32).unwrap().is_none());
}

#[test]
fn a_bot_writes_the_same_text_with_and_without_its_screen_and_shortlists() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/default");
    let files = crate::util::Files::read(&dir);
    for dtype in [botcard::Dtype::F32, botcard::Dtype::Q8_0] {
        let screened = botcard::Bot::load(&files.model_files(), dtype).unwrap();
        let mut full = botcard::Bot::load(&files.model_files(), dtype).unwrap();
        full.model.compute_every_logit();
        if dtype == botcard::Dtype::F32 {
            assert!(
                screened.model.weight_bytes() > full.model.weight_bytes(),
                "the default bot in f32 has a screen"
            );
        }
        same_text(&screened, &full);
    }
}

/// Panics unless `screened` and `full` write the same text for greedy decoding and the sampling settings
/// huggingtweets used, with and without processors.
fn same_text(screened: &botcard::Bot, full: &botcard::Bot) {
    let base = screened.settings();
    let mut cases = Vec::new();
    // Greedy, end of text banned throughout.
    let mut p = base.clone();
    p.do_sample = false;
    p.max_new_tokens = Some(60);
    p.min_new_tokens = Some(60);
    cases.push(p);
    // The widget's job: five samples, top_k 50.
    let mut p = base.clone();
    p.do_sample = true;
    p.top_k = 50;
    p.num_return_sequences = 5;
    p.seed = Some(3);
    p.max_new_tokens = Some(50);
    cases.push(p.clone());
    // Processors that change the context's logits, and a temperature.
    p.repetition_penalty = 1.4;
    p.no_repeat_ngram_size = 2;
    p.temperature = 0.7;
    p.top_k = 5;
    cases.push(p.clone());
    // A penalty below 1 raises the context's logits.
    p.repetition_penalty = 0.6;
    p.top_k = 1;
    cases.push(p.clone());
    // No top-k: every logit is computed.
    p.top_k = 0;
    p.top_p = 0.9;
    cases.push(p);
    for p in cases {
        let run = |b: &botcard::Bot| {
            botcard::generate(&b.model, &b.tokenizer, "My dream is", p.clone(), |_| {}).unwrap()
        };
        assert_eq!(run(screened), run(full), "{p:?}");
    }
}

/// The default bot in f32 with its output rigged: ln_f outputs the constant vector 1, so each
/// token's logit is the sum of its (tied) embedding row at every step, and three rows stand out:
/// the end of text (40), then `a` (30), then `b` (25).
fn rigged_default(eos: u32, a: u32, b: u32) -> botcard::Bot {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/default");
    let mut f = crate::util::Files::read(&dir);
    let st =
        crate::util::edit_safetensors(f.get("model.safetensors").unwrap(), |name, shape, data| {
            if name.ends_with("ln_f.weight") {
                data.fill(0.0);
            } else if name.ends_with("ln_f.bias") {
                data.fill(1.0);
            } else if name.ends_with("wte.weight") {
                let cols = shape[1];
                for (t, logit) in [(eos, 40.0), (a, 30.0), (b, 25.0)] {
                    data[t as usize * cols..][..cols].fill(logit / cols as f32);
                }
            }
        });
    f.set("model.safetensors", st);
    f.load().unwrap()
}

#[test]
fn logits_the_processors_change_are_exact_even_far_below_the_top() {
    let probe = crate::util::Files::read(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/default"),
    )
    .load()
    .unwrap();
    let eos = probe.config.eos_token_id.unwrap();
    let prompt = "My dream is";
    let b = probe.tokenizer.encode(prompt).unwrap()[0];
    let a = (0..100).find(|&t| t != eos && t != b).unwrap();
    let screened = rigged_default(eos, a, b);
    let mut full = rigged_default(eos, a, b);
    full.model.compute_every_logit();
    let mut p = screened.settings();
    p.max_new_tokens = Some(4);
    p.min_new_tokens = Some(4);
    // Greedy with the end of text banned: the pick is `a`, 10 below the end of text.
    p.do_sample = false;
    let mut sampled = p.clone();
    // A penalty below 1 lifts the prompt's `b` (25 / 0.6) above `a`.
    sampled.do_sample = true;
    sampled.top_k = 1;
    sampled.repetition_penalty = 0.6;
    for (p, first) in [(p, a), (sampled, b)] {
        let run = |bot: &botcard::Bot| {
            botcard::generate(&bot.model, &bot.tokenizer, prompt, p.clone(), |_| {}).unwrap()
        };
        let got = run(&screened);
        assert_eq!(got[0].token_ids[0], first, "{p:?}");
        assert_eq!(got, run(&full), "{p:?}");
    }
}
