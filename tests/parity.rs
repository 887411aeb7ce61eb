//! The engine against HF transformers: teacher-forced log-probabilities, greedy continuations,
//! both checkpoint formats, and the KV cache against a full recompute.

use botcard::model::Gpt2;
use candle_core::{Tensor, D};

use crate::util::{assert_close, bot, f64s, reference, u32s};

const MODELS: [&str; 4] = ["tiny-st", "tiny-2021", "relu-st", "gelu-2021"];

#[test]
fn logprobs_match_transformers_within_1e_4() {
    let r = reference();
    for name in MODELS {
        let b = bot(name);
        let mut worst = 0.0f64;
        for case in r["models"][name]["score"].as_array().unwrap() {
            let ids = u32s(&case["ids"]);
            assert_eq!(
                b.tokenizer.encode(case["text"].as_str().unwrap()).unwrap(),
                ids
            );
            let got = b.model.logprobs(&ids).unwrap();
            worst = worst.max(assert_close(name, &got, &f64s(&case["logprobs"]), 1e-4));
        }
        eprintln!("{name}: max |Δ logprob| vs transformers = {worst:.2e}");
    }
}

/// Log-softmax over the whole vocabulary at the last position (first 8 entries recorded).
fn last_logprobs(model: &Gpt2, ids: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(ids.len());
    let h = model.forward(&[ids.to_vec()], &mut cache).unwrap();
    let logits = model
        .logits(&h.narrow(1, ids.len() - 1, 1).unwrap())
        .unwrap()
        .flatten_all()
        .unwrap();
    let lp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
    lp.narrow(0, 0, 8).unwrap().to_vec1().unwrap()
}

#[test]
fn full_vocabulary_logprobs_match_transformers() {
    let r = reference();
    for name in MODELS {
        let b = bot(name);
        for case in r["models"][name]["score"].as_array().unwrap() {
            let got = last_logprobs(&b.model, &u32s(&case["ids"]));
            assert_close(name, &got, &f64s(&case["last_logprobs_head"]), 1e-4);
        }
    }
}

#[test]
fn greedy_ids_match_transformers() {
    let r = reference();
    for name in MODELS {
        let b = bot(name);
        for case in r["models"][name]["greedy"].as_array().unwrap() {
            let expected = u32s(&case["new_ids"]);
            let mut p = b.settings();
            p.do_sample = false;
            p.max_new_tokens = Some(expected.len());
            p.min_new_tokens = Some(expected.len());
            p.prefix = if case["prefix"].as_bool().unwrap() {
                Some("<|endoftext|>".into())
            } else {
                None
            };
            let prompt = case["prompt"].as_str().unwrap();
            let mut session = b.session(prompt, p).unwrap();
            assert_eq!(
                session.prompt_ids(),
                u32s(&case["input_ids"]).as_slice(),
                "{name} {prompt:?}"
            );
            while !session.is_done() {
                b.step(&mut session).unwrap();
            }
            let out = &session.sequences()[0];
            assert_eq!(
                out.token_ids, expected,
                "{name} {prompt:?} prefix={}",
                case["prefix"]
            );
            assert_eq!(
                out.text,
                case["text"].as_str().unwrap(),
                "{name} {prompt:?}"
            );
        }
    }
}

fn all_logits(model: &Gpt2, ids: &[u32]) -> Tensor {
    let mut cache = model.new_cache(ids.len());
    let h = model.forward(&[ids.to_vec()], &mut cache).unwrap();
    model.logits(&h).unwrap().squeeze(0).unwrap()
}

#[test]
fn pytorch_bin_and_safetensors_give_identical_logits() {
    let (st, bin) = (bot("tiny-st"), bot("tiny-2021"));
    let ids = st
        .tokenizer
        .encode("<|endoftext|>My dream is to see the sea")
        .unwrap();
    let a: Vec<Vec<f32>> = all_logits(&st.model, &ids).to_vec2().unwrap();
    let b: Vec<Vec<f32>> = all_logits(&bin.model, &ids).to_vec2().unwrap();
    assert_eq!(a, b);
}

#[test]
fn incremental_decoding_equals_full_recompute() {
    for name in ["tiny-st", "relu-st"] {
        let b = bot(name);
        let ids = b
            .tokenizer
            .encode("<|endoftext|>My dream is to fly over the mountains, far away")
            .unwrap();
        let full: Vec<Vec<f32>> = all_logits(&b.model, &ids).to_vec2().unwrap();
        // Prefill 3 tokens, then a chunk of 4, then one at a time.
        let mut cache = b.model.new_cache(2);
        let mut got: Vec<Vec<f32>> = Vec::new();
        let mut at = 0;
        for chunk in [3, 4].into_iter().chain(std::iter::repeat(1)) {
            if at >= ids.len() {
                break;
            }
            let end = (at + chunk).min(ids.len());
            let h = b
                .model
                .forward(&[ids[at..end].to_vec()], &mut cache)
                .unwrap();
            assert_eq!(cache.position(), end);
            let rows: Vec<Vec<f32>> = b
                .model
                .logits(&h)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec2()
                .unwrap();
            got.extend(rows);
            at = end;
        }
        for (pos, (g, f)) in got.iter().zip(&full).enumerate() {
            let f: Vec<f64> = f.iter().map(|&x| f64::from(x)).collect();
            assert_close(&format!("{name} position {pos}"), g, &f, 1e-4);
        }
    }
}

#[test]
fn batched_rows_equal_a_single_row() {
    let b = bot("tiny-st");
    let ids = b.tokenizer.encode("My dream is").unwrap();
    let mut c1 = b.model.new_cache(8);
    let one: Vec<Vec<f32>> = b
        .model
        .next_logits(std::slice::from_ref(&ids), &mut c1)
        .unwrap()
        .to_vec2()
        .unwrap();
    let mut c3 = b.model.new_cache(8);
    let three: Vec<Vec<f32>> = b
        .model
        .next_logits(&vec![ids; 3], &mut c3)
        .unwrap()
        .to_vec2()
        .unwrap();
    for row in &three {
        let f: Vec<f64> = one[0].iter().map(|&x| f64::from(x)).collect();
        assert_close("batched row", row, &f, 1e-5);
    }
}
