//! Logits processors against HF's own output on crafted logits (recorded by make_fixtures.py).

use botcard::sampling;

use crate::util::{reference, u32s};

fn rows(v: &serde_json::Value) -> Vec<Vec<Option<f64>>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64()).collect())
        .collect()
}

fn check(case: &serde_json::Value, apply: impl Fn(&mut Vec<f32>, &[u32])) {
    let name = case["name"].as_str().unwrap();
    let logits = rows(&case["logits"]);
    let expected = rows(&case["expected"]);
    let input_ids: Vec<Vec<u32>> = case["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(u32s)
        .collect();
    for (b, (row, exp)) in logits.iter().zip(&expected).enumerate() {
        let mut l: Vec<f32> = row.iter().map(|x| x.unwrap() as f32).collect();
        apply(&mut l, &input_ids[b]);
        for (i, (g, e)) in l.iter().zip(exp).enumerate() {
            match e {
                None => assert_eq!(
                    *g,
                    f32::NEG_INFINITY,
                    "{name} row {b} id {i}: expected -inf, got {g}"
                ),
                Some(e) => assert!(
                    (f64::from(*g) - e).abs() < 1e-5,
                    "{name} row {b} id {i}: got {g}, expected {e}"
                ),
            }
        }
    }
}

#[test]
fn processors_match_transformers_definitions() {
    let r = reference();
    let cases = r["processors"].as_array().unwrap();
    assert!(cases.len() >= 15);
    for case in cases {
        let p = &case["params"];
        let name = case["name"].as_str().unwrap();
        if let Some(t) = p["temperature"].as_f64() {
            check(case, |l, _| sampling::temperature(l, t as f32));
        } else if let Some(k) = p["top_k"].as_u64() {
            check(case, |l, _| sampling::top_k(l, k as usize));
        } else if let Some(top_p) = p["top_p"].as_f64() {
            check(case, |l, _| sampling::top_p(l, top_p));
        } else if let Some(r) = p["repetition_penalty"].as_f64() {
            check(case, |l, ids| {
                sampling::repetition_penalty(l, ids, r as f32)
            });
        } else if let Some(n) = p["no_repeat_ngram_size"].as_u64() {
            check(case, |l, ids| sampling::no_repeat_ngram(l, ids, n as usize));
        } else if let Some(m) = p["min_new_tokens"].as_u64() {
            let prompt_len = p["prompt_len"].as_u64().unwrap() as usize;
            let eos = p["eos"].as_u64().unwrap() as u32;
            check(case, |l, ids| {
                sampling::min_new_tokens(l, ids.len() - prompt_len, m as usize, Some(eos))
            });
        } else {
            panic!("unchecked case {name}");
        }
    }
}

#[test]
fn top_k_keeps_ties_with_the_kth_logit() {
    let mut l = vec![1.0, 3.0, 2.0, 3.0, 0.5];
    sampling::top_k(&mut l, 1);
    assert_eq!(
        l,
        vec![
            f32::NEG_INFINITY,
            3.0,
            f32::NEG_INFINITY,
            3.0,
            f32::NEG_INFINITY
        ]
    );
}

#[test]
fn top_p_always_keeps_the_most_likely_token() {
    let mut l = vec![0.0, 10.0, 1.0];
    sampling::top_p(&mut l, 1e-9);
    assert_eq!(l, vec![f32::NEG_INFINITY, 10.0, f32::NEG_INFINITY]);
}

#[test]
fn sample_walks_the_cumulative_distribution() {
    // probabilities 0.25 / 0.75 for ids 1 and 2
    let l = vec![f32::NEG_INFINITY, 0.0, 3f32.ln()];
    assert_eq!(sampling::sample(&l, 0.0), 1);
    assert_eq!(sampling::sample(&l, 0.2499), 1);
    assert_eq!(sampling::sample(&l, 0.2501), 2);
    assert_eq!(sampling::sample(&l, 0.9999999), 2);
}

#[test]
fn argmax_takes_the_first_of_equal_maxima() {
    assert_eq!(sampling::argmax(&[0.0, 2.0, 2.0, 1.0]), 1);
}
