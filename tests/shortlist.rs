//! Shortlists of next-token logits (`src/shortlist.rs`): every token a top-k sampler can pick is
//! listed with its exact logit, the tokens its processors change always are, and every token
//! left out is below the k-th largest of the others by more than a temperature can round away.

use botcard::shortlist::{below, shortlists, Logits};
use rand::{Rng, SeedableRng};

/// Checks the shortlists of `rows` (each `vocab` long) for `k` and `exact`.
fn check(rows: &[f32], vocab: usize, k: usize, exact: &[&[u32]]) {
    let got = shortlists(rows.to_vec(), vocab, k, exact);
    assert_eq!(got.len(), rows.len() / vocab);
    for (i, (l, row)) in got.iter().zip(rows.chunks(vocab)).enumerate() {
        let fixed = |t: u32| exact.get(i).is_some_and(|e| e.contains(&t));
        let odd = (0..vocab as u32)
            .any(|t| !fixed(t) && (row[t as usize].is_nan() || row[t as usize] == f32::INFINITY));
        let mut rest: Vec<f32> = (0..vocab as u32)
            .filter(|&t| !fixed(t))
            .map(|t| row[t as usize])
            .collect();
        rest.sort_by(|a, b| b.total_cmp(a));
        match l {
            Logits::Every(v) => {
                assert_eq!(v.len(), row.len());
                assert!(v.iter().zip(row).all(|(a, b)| a.to_bits() == b.to_bits()));
                assert!(
                    odd || rest.len() < k || !rest[k - 1].is_finite(),
                    "row {i} kept whole without a reason"
                );
            }
            Logits::Short { ids, values } => {
                assert!(!odd, "row {i}: NaN or +inf, yet shortlisted");
                assert!(
                    ids.windows(2).all(|w| w[0] < w[1]),
                    "row {i}: ids ascending"
                );
                for (&t, &v) in ids.iter().zip(values) {
                    assert_eq!(v.to_bits(), row[t as usize].to_bits(), "row {i} token {t}");
                }
                let kth = rest[k - 1];
                for t in 0..vocab as u32 {
                    let listed = ids.binary_search(&t).is_ok();
                    if fixed(t) {
                        assert!(listed, "row {i}: token {t} is changed by a processor");
                    } else if !listed {
                        assert!(row[t as usize] < below(kth), "row {i}: token {t} left out");
                    }
                }
                let kept = ids.iter().filter(|&&t| !fixed(t)).count();
                assert!(kept >= k, "row {i}: {kept} tokens for k = {k}");
            }
        }
    }
}

#[test]
fn shortlists_hold_every_token_a_top_k_sampler_can_pick() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for case in 0..200 {
        let vocab = 1 + rng.random_range(0..3000);
        let m = 1 + case % 5;
        let mut rows: Vec<f32> = (0..m * vocab)
            .map(|_| match rng.random_range(0..20) {
                // Ties, and values a rounding apart.
                0..=2 => rng.random_range(-3..3) as f32,
                3 => 1.0 + f32::EPSILON * rng.random_range(0..4) as f32,
                _ => rng.random::<f32>() * 20.0 - 10.0,
            })
            .collect();
        if case % 7 == 0 {
            let at = rng.random_range(0..rows.len());
            rows[at] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][case % 3];
        }
        let context: Vec<Vec<u32>> = (0..m)
            .map(|_| {
                (0..rng.random_range(0..30))
                    .map(|_| rng.random_range(0..vocab as u32 + 5))
                    .collect()
            })
            .collect();
        let exact: Vec<&[u32]> = context.iter().map(Vec::as_slice).collect();
        for k in [1, 2, 50, vocab / 2 + 1, vocab, vocab + 1] {
            check(&rows, vocab, k.max(1), &exact);
        }
        check(&rows, vocab, 50, &[]);
    }
}

#[test]
fn tokens_left_out_are_few_in_a_row_like_a_models() {
    // Logits spread as a GPT-2's are: a top-50 sampler's shortlist is about its 50 tokens.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
    let vocab = 50_257;
    let row: Vec<f32> = (0..vocab)
        .map(|_| (0..4).map(|_| rng.random::<f32>()).sum::<f32>() * 2.0)
        .collect();
    let got = shortlists(row, vocab, 50, &[&[3, 3, 70_000, 9]]);
    let Logits::Short { ids, .. } = &got[0] else {
        panic!("a shortlist")
    };
    assert!(ids.len() >= 52 && ids.len() < 60, "{} tokens", ids.len());
    assert!(ids.contains(&3) && ids.contains(&9));
}
