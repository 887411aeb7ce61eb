//! HF transformers' logits processors and warpers, one function each, on one row of logits.
//! Each follows the definition in `transformers/generation/logits_process.py` (4.57), in f32 as
//! torch computes them; `tests/sampling.rs` checks them against HF's own output.

use std::collections::HashSet;

/// Logits the processors reach by token id: a whole vocabulary's, or a shortlist's
/// ([`crate::shortlist::Logits`]), which holds every token a processor changes.
pub trait ByToken {
    /// Token `id`'s logit; `None` where the row holds none for it.
    fn logit(&mut self, id: u32) -> Option<&mut f32>;
}

impl ByToken for [f32] {
    fn logit(&mut self, id: u32) -> Option<&mut f32> {
        self.get_mut(id as usize)
    }
}

impl ByToken for Vec<f32> {
    fn logit(&mut self, id: u32) -> Option<&mut f32> {
        self.get_mut(id as usize)
    }
}

/// `RepetitionPenaltyLogitsProcessor`: every token already in `context` (prompt included) gets
/// its logit divided by `penalty` if positive, multiplied if negative.
pub fn repetition_penalty(logits: &mut (impl ByToken + ?Sized), context: &[u32], penalty: f32) {
    let seen: HashSet<u32> = context.iter().copied().collect();
    for id in seen {
        if let Some(l) = logits.logit(id) {
            *l = if *l < 0.0 { *l * penalty } else { *l / penalty };
        }
    }
}

/// `NoRepeatNGramLogitsProcessor`: bans every token that would complete an n-gram already
/// present in `context`.
pub fn no_repeat_ngram(logits: &mut (impl ByToken + ?Sized), context: &[u32], n: usize) {
    if n == 0 || context.len() + 1 < n {
        return;
    }
    let tail = &context[context.len() + 1 - n..];
    for w in context.windows(n) {
        if &w[..n - 1] == tail {
            if let Some(l) = logits.logit(w[n - 1]) {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

/// `MinNewTokensLengthLogitsProcessor` (and `MinLengthLogitsProcessor`): no end-of-text before
/// `min_new` tokens have been generated.
pub fn min_new_tokens(
    logits: &mut (impl ByToken + ?Sized),
    generated: usize,
    min_new: usize,
    eos: Option<u32>,
) {
    if generated < min_new {
        if let Some(l) = eos.and_then(|e| logits.logit(e)) {
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
    let kth = kth_largest(logits, k);
    for l in logits {
        if *l < kth {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// The `k`-th largest of `values` (0 < k ≤ len) in `f32::total_cmp`'s order, as
/// `select_nth_unstable_by` finds it, in one pass and without a copy of the vocabulary: the k
/// largest so far sit in a min-heap, and most values only meet its smallest.
pub(crate) fn kth_largest(values: &[f32], k: usize) -> f32 {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    let mut top: BinaryHeap<Reverse<Total>> =
        values[..k].iter().map(|&v| Reverse(Total(v))).collect();
    let mut least = top.peek().expect("k > 0").0 .0;
    for &v in &values[k..] {
        if v.total_cmp(&least).is_gt() {
            *top.peek_mut().expect("k > 0") = Reverse(Total(v));
            least = top.peek().expect("k > 0").0 .0;
        }
    }
    least
}

/// An f32 ordered by `total_cmp`, for heaps of logits.
#[derive(PartialEq)]
pub(crate) struct Total(pub f32);
impl Eq for Total {}
impl PartialOrd for Total {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Total {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
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
    // Only tokens of weight > 0, in id order: -inf (removed by top_k/top_p, most of the
    // vocabulary after top_k) weighs 0, and a zero adds nothing to the sums below.
    let weights: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .filter(|&(_, &l)| l != f32::NEG_INFINITY)
        .map(|(i, &l)| (i, f64::from(l - max).exp()))
        .filter(|&(_, w)| w > 0.0)
        .collect();
    let total: f64 = weights.iter().map(|&(_, w)| w).sum();
    let target = f64::from(u) * total;
    let mut cum = 0.0;
    for &(i, w) in &weights {
        cum += w;
        if cum > target {
            return i as u32;
        }
    }
    weights.last().map_or(0, |&(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The k-th largest as the warper found it before: a sorted copy's k-th, by total order.
    fn kth_by_selection(values: &[f32], k: usize) -> f32 {
        let mut sorted = values.to_vec();
        *sorted
            .select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a))
            .1
    }

    #[test]
    fn kth_largest_equals_selection_with_ties_zeros_infinities_and_nans() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut next = move || rng.random::<u64>();
        let special = [
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            1.5,
        ];
        for case in 0..300 {
            let n = 1 + (next() % 400) as usize;
            let values: Vec<f32> = (0..n)
                .map(|_| match next() % 10 {
                    0 if case % 3 == 0 => special[(next() % special.len() as u64) as usize],
                    1..=3 => (next() % 8) as f32 - 4.0, // many ties
                    _ => (next() % 1_000_000) as f32 / 1000.0 - 500.0,
                })
                .collect();
            for k in [1, 2, 5, 50, n / 2 + 1, n] {
                let k = k.clamp(1, n);
                let (a, b) = (kth_largest(&values, k), kth_by_selection(&values, k));
                assert_eq!(a.to_bits(), b.to_bits(), "case {case}, k {k}");
            }
        }
    }

    #[test]
    fn sampling_skips_removed_tokens_and_walks_in_id_order() {
        let mut l = vec![f32::NEG_INFINITY; 10];
        (l[2], l[5], l[7]) = (0.0, 0.0, 0.0);
        assert_eq!(sample(&l, 0.0), 2);
        assert_eq!(sample(&l, 0.5), 5);
        assert_eq!(sample(&l, 0.99), 7);
        assert_eq!(sample(&[f32::NEG_INFINITY; 4], 0.5), 0);
    }
}
