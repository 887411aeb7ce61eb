//! HF transformers' logits processors and warpers, one function each, on one row of logits.
//! Each follows the definition in `transformers/generation/logits_process.py` (4.57), in f32 as
//! torch computes them; `tests/sampling.rs` checks them against HF's own output.

use std::collections::HashSet;

/// `RepetitionPenaltyLogitsProcessor`: every token already in `context` (prompt included) gets
/// its logit divided by `penalty` if positive, multiplied if negative.
pub fn repetition_penalty(logits: &mut [f32], context: &[u32], penalty: f32) {
    let seen: HashSet<u32> = context.iter().copied().collect();
    for id in seen {
        if let Some(l) = logits.get_mut(id as usize) {
            *l = if *l < 0.0 { *l * penalty } else { *l / penalty };
        }
    }
}

/// `NoRepeatNGramLogitsProcessor`: bans every token that would complete an n-gram already
/// present in `context`.
pub fn no_repeat_ngram(logits: &mut [f32], context: &[u32], n: usize) {
    if n == 0 || context.len() + 1 < n {
        return;
    }
    let tail = &context[context.len() + 1 - n..];
    for w in context.windows(n) {
        if &w[..n - 1] == tail {
            if let Some(l) = logits.get_mut(w[n - 1] as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

/// `MinNewTokensLengthLogitsProcessor` (and `MinLengthLogitsProcessor`): no end-of-text before
/// `min_new` tokens have been generated.
pub fn min_new_tokens(logits: &mut [f32], generated: usize, min_new: usize, eos: Option<u32>) {
    if generated < min_new {
        if let Some(l) = eos.and_then(|e| logits.get_mut(e as usize)) {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// `TemperatureLogitsWarper`.
pub fn temperature(logits: &mut [f32], t: f32) {
    for l in logits {
        *l /= t;
    }
}

/// `TopKLogitsWarper` (min_tokens_to_keep = 1): logits below the k-th largest become -inf;
/// ties with the k-th are kept, as in HF.
pub fn top_k(logits: &mut [f32], k: usize) {
    let k = k.max(1);
    if k >= logits.len() {
        return;
    }
    let mut sorted = logits.to_vec();
    let (_, kth, _) = sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let kth = *kth;
    for l in logits {
        if *l < kth {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// `TopPLogitsWarper` (min_tokens_to_keep = 1): sorts ascending, removes tokens whose
/// cumulative probability is <= 1 - p, always keeps the most likely one.
pub fn top_p(logits: &mut [f32], p: f64) {
    if p >= 1.0 {
        return;
    }
    // -inf logits have probability 0 and are removed either way: sort only the rest.
    let mut order: Vec<usize> = (0..logits.len())
        .filter(|&i| logits[i] > f32::NEG_INFINITY)
        .collect();
    order.sort_by(|&a, &b| logits[a].total_cmp(&logits[b]));
    let Some(&top) = order.last() else { return };
    let max = logits[top];
    let exps: Vec<f32> = order.iter().map(|&i| (logits[i] - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    let threshold = (1.0 - p) as f32;
    let mut cum = 0.0f32;
    let mut remove = Vec::new();
    for (n, (&i, e)) in order.iter().zip(&exps).enumerate() {
        cum += e / sum;
        if cum <= threshold && n + 1 < order.len() {
            remove.push(i);
        }
    }
    for i in remove {
        logits[i] = f32::NEG_INFINITY;
    }
}

/// Index of the largest logit; the first one on ties, as `torch.argmax`.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Draws from softmax(`logits`) with `u` uniform in [0, 1): walks the cumulative
/// distribution in id order. The same `u` and logits give the same token on every platform.
pub fn sample(logits: &[f32], u: f32) -> u32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY || max.is_nan() {
        return argmax(logits);
    }
    // -inf (removed by top_k/top_p) weighs 0: skip its exp, most of the vocabulary after top_k.
    let weights: Vec<f64> = logits
        .iter()
        .map(|&l| {
            if l == f32::NEG_INFINITY {
                0.0
            } else {
                f64::from(l - max).exp()
            }
        })
        .collect();
    let total: f64 = weights.iter().sum();
    let target = f64::from(u) * total;
    let mut cum = 0.0;
    let mut last = 0;
    for (i, w) in weights.iter().enumerate() {
        if *w > 0.0 {
            cum += w;
            last = i;
            if cum > target {
                return i as u32;
            }
        }
    }
    last as u32
}
