//! Sessions: seeds, batches, lengths as HF counts them, stopping rules.

use botcard::GenerationSettings;

use crate::util::{bot, edit_safetensors, Files};

fn run(b: &botcard::Bot, prompt: &str, p: GenerationSettings) -> Vec<botcard::Sequence> {
    botcard::generate(&b.model, &b.tokenizer, prompt, p, |_| {}).unwrap()
}

fn sampling_params(b: &botcard::Bot, seed: u64) -> GenerationSettings {
    let mut p = b.settings();
    p.do_sample = true;
    p.seed = Some(seed);
    p.max_new_tokens = Some(12);
    p
}

#[test]
fn huggingtweets_defaults_come_from_task_specific_params() {
    let b = bot("tiny-st");
    let p = b.settings();
    assert!(p.do_sample);
    assert_eq!((p.min_length, p.max_length), (10, 160));
    assert_eq!(p.top_p, 0.95);
    assert_eq!(
        p.top_k, 50,
        "HF's default top_k applies when the model sets none"
    );
    assert_eq!(p.prefix.as_deref(), Some("<|endoftext|>"));
}

#[test]
fn same_seed_gives_the_same_text_and_another_seed_differs() {
    let b = bot("tiny-st");
    let a = run(&b, "My dream is", sampling_params(&b, 42));
    assert_eq!(a, run(&b, "My dream is", sampling_params(&b, 42)));
    assert_ne!(a, run(&b, "My dream is", sampling_params(&b, 43)));
}

#[test]
fn num_return_sequences_gives_distinct_samples_of_the_requested_length() {
    let b = bot("tiny-st");
    let mut p = sampling_params(&b, 1);
    p.num_return_sequences = 4;
    p.min_new_tokens = Some(12);
    let out = run(&b, "My dream is", p);
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|s| s.token_ids.len() == 12));
    assert!(out[0] != out[1] || out[1] != out[2]);
}

#[test]
fn greedy_returns_one_sequence() {
    let b = bot("tiny-st");
    let mut p = sampling_params(&b, 1);
    p.do_sample = false;
    p.num_return_sequences = 3;
    assert_eq!(run(&b, "My dream is", p).len(), 1);
}

#[test]
fn top_k_1_sampling_equals_greedy() {
    let b = bot("relu-st");
    let mut s = sampling_params(&b, 9);
    s.top_k = 1;
    let mut g = s.clone();
    g.do_sample = false;
    assert_eq!(run(&b, "My dream is", s), run(&b, "My dream is", g));
}

#[test]
fn temperature_zero_means_greedy() {
    let b = bot("tiny-st");
    let mut t0 = sampling_params(&b, 5);
    t0.temperature = 0.0;
    let mut g = t0.clone();
    g.do_sample = false;
    assert_eq!(run(&b, "My dream is", t0), run(&b, "My dream is", g));
}

#[test]
fn max_length_counts_the_prompt_but_not_the_prefix() {
    let b = bot("tiny-st");
    let mut p = b.settings();
    p.do_sample = false;
    p.max_length = 7;
    p.min_length = 7;
    // "My dream is" is 3 tokens: 4 new ones, whether or not <|endoftext|> is put first.
    assert_eq!(run(&b, "My dream is", p.clone())[0].token_ids.len(), 4);
    p.prefix = None;
    assert_eq!(run(&b, "My dream is", p)[0].token_ids.len(), 4);
}

/// relu-st with its output layer rigged so that `token` is by far the likeliest next token:
/// ln_f outputs the constant vector 1, and lm_head's row `token` points along it, 100 times longer.
fn rigged_bot(token: usize) -> botcard::Bot {
    let mut f = Files::of("relu-st");
    let st = edit_safetensors(
        f.get("model.safetensors").unwrap(),
        |name, shape, data| match name {
            "transformer.ln_f.weight" => data.iter_mut().for_each(|x| *x = 0.0),
            "transformer.ln_f.bias" => data.iter_mut().for_each(|x| *x = 1.0),
            "lm_head.weight" => data[token * shape[1]..(token + 1) * shape[1]]
                .iter_mut()
                .for_each(|x| *x = 100.0),
            _ => {}
        },
    );
    f.set("model.safetensors", st);
    f.load().unwrap()
}

#[test]
fn stop_at_newline_cuts_the_text_at_the_first_line_break() {
    let b = rigged_bot(198);
    let mut p = sampling_params(&b, 0);
    p.prefix = None;
    p.max_new_tokens = Some(5);
    let out = run(&b, "Hello", p.clone());
    assert_eq!(
        out[0].text, "\n\n\n\n\n",
        "the rigged model writes newlines"
    );
    p.stop_at_newline = true;
    let out = run(&b, "Hello", p);
    assert_eq!(out[0].token_ids, vec![198]);
    assert_eq!(out[0].text, "");
}

#[test]
fn min_new_tokens_holds_back_end_of_text() {
    let b = rigged_bot(50256);
    let mut p = sampling_params(&b, 0);
    p.max_new_tokens = Some(20);
    p.min_new_tokens = Some(0);
    assert_eq!(
        run(&b, "Hello", p.clone())[0].token_ids,
        vec![50256],
        "the rigged model ends at once"
    );
    p.min_new_tokens = Some(6);
    let out = run(&b, "Hello", p)[0].token_ids.clone();
    assert_eq!(out.len(), 7, "{out:?}");
    assert!(!out[..6].contains(&50256) && out[6] == 50256, "{out:?}");
}

#[test]
fn streamed_pieces_add_up_to_the_final_text() {
    let b = bot("tiny-st");
    let mut p = sampling_params(&b, 11);
    p.num_return_sequences = 2;
    let mut pieces = [String::new(), String::new()];
    let out = botcard::generate(&b.model, &b.tokenizer, "🤖", p, |t| {
        pieces[t.sequence].push_str(&t.text)
    })
    .unwrap();
    assert_eq!(pieces[0], out[0].text);
    assert_eq!(pieces[1], out[1].text);
}

#[test]
fn empty_prompt_starts_from_end_of_text() {
    let b = bot("tiny-st");
    let mut p = sampling_params(&b, 0);
    p.prefix = None;
    let s = b.session("", p).unwrap();
    assert_eq!(s.prompt_ids(), &[50256]);
}

#[test]
fn a_prompt_longer_than_the_context_keeps_its_last_tokens() {
    let b = bot("tiny-st"); // n_positions = 64
    let long = "word ".repeat(200);
    let mut p = sampling_params(&b, 0);
    p.max_new_tokens = Some(10);
    let mut s = b.session(&long, p).unwrap();
    assert_eq!(s.prompt_ids().len(), 54);
    while !s.is_done() {
        b.step(&mut s).unwrap();
    }
    assert_eq!(s.sequences()[0].token_ids.len(), 10);
}

#[test]
fn max_new_tokens_beyond_the_context_is_capped() {
    let b = bot("gelu-2021"); // n_positions = 40
    let mut p = sampling_params(&b, 0);
    p.max_new_tokens = Some(1000);
    p.min_new_tokens = Some(1000);
    let out = run(&b, "My dream is", p);
    assert_eq!(out[0].token_ids.len(), 39);
}
