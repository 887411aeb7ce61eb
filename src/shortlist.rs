//! The next-token logits a top-k sampler can pick from, found by scanning each row of logits in
//! runs spread over the threads: one SIMD pass for the largest logit of every 16, then a look
//! at only the few 16s that can hold a token the sampler may pick.
//!
//! Why: the sampler's processors and warpers (temperature, top-k, top-p, the draw) each pass
//! over the whole vocabulary, 50,257 logits per row, on the thread that gathers a step's
//! rows; for the widget's five samples that was the largest serial part of a step after the
//! matrix products. A sampler that keeps the `k` most likely tokens picks, bit for bit, the
//! same token from a shortlist that holds every token that can be among those `k` (with its
//! exact logit) as from the whole row, where every other logit is −∞:
//! - the processors change only the logits of the tokens given as `exact` (the context's, the
//!   end-of-text token's), which are always listed;
//! - every other token keeps its logit, so at least `k` listed tokens stay at or above K, the
//!   k-th largest of those logits: the k-th largest after the processors is at least K;
//! - a token left out is below [`below`]`(K)`, lower than K by more than dividing both by a
//!   temperature can round away, so top-k removes it from the whole row as well.

use crate::sampling::{kth_largest, ByToken, Total};

/// One row of next-token logits as a sampler gets them.
#[derive(Clone, Debug)]
pub enum Logits {
    /// Every token's logit, by id.
    Every(Vec<f32>),
    /// The tokens `ids` (ascending) and their logits; every other token's is −∞ to a sampler
    /// that keeps at most the `k` most likely tokens it was made for.
    Short { ids: Vec<u32>, values: Vec<f32> },
}

impl Logits {
    /// The logits, in id order, that the warpers work on by position.
    pub fn values_mut(&mut self) -> &mut [f32] {
        match self {
            Self::Every(v) | Self::Short { values: v, .. } => v,
        }
    }

    /// The token id at position `at` of [`values_mut`](Logits::values_mut).
    pub fn id(&self, at: u32) -> u32 {
        match self {
            Self::Every(_) => at,
            Self::Short { ids, .. } => ids[at as usize],
        }
    }
}

impl ByToken for Logits {
    fn logit(&mut self, id: u32) -> Option<&mut f32> {
        match self {
            Self::Every(v) => v.logit(id),
            Self::Short { ids, values } => ids.binary_search(&id).ok().map(|i| &mut values[i]),
        }
    }
}

/// `kth` lowered by more than dividing it and a smaller value by the same temperature can
/// round away: every value below this stays below `kth` once both are divided.
pub fn below(kth: f32) -> f32 {
    kth - (kth.abs() / 1_048_576.0 + f32::MIN_POSITIVE)
}

/// Each row of `logits` (`vocab` values each) whole.
pub fn whole_rows(logits: &[f32], vocab: usize) -> Vec<Logits> {
    logits
        .chunks(vocab.max(1))
        .map(|r| Logits::Every(r.to_vec()))
        .collect()
}

/// The rows of `logits` (`vocab` values each) as a sampler that keeps at most the `k` most
/// likely tokens needs them, the tokens of `exact[i]` always listed in row i. A row where a
/// logit is NaN or +∞, or with fewer than `k` other tokens above −∞, is kept whole.
pub fn shortlists(mut logits: Vec<f32>, vocab: usize, k: usize, exact: &[&[u32]]) -> Vec<Logits> {
    if k == 0 || vocab == 0 {
        return whole_rows(&logits, vocab);
    }
    let rows = logits.len() / vocab;
    // The tokens the processors change and their logits, which then read as −∞ to the scans:
    // they are listed whatever their logit, and must not count towards k.
    let fixed: Vec<Vec<(u32, f32)>> = (0..rows)
        .map(|i| {
            let mut ids: Vec<u32> = exact.get(i).copied().unwrap_or_default().to_vec();
            ids.retain(|&t| (t as usize) < vocab);
            ids.sort_unstable();
            ids.dedup();
            let row = &mut logits[i * vocab..(i + 1) * vocab];
            ids.into_iter()
                .map(|t| {
                    (
                        t,
                        std::mem::replace(&mut row[t as usize], f32::NEG_INFINITY),
                    )
                })
                .collect()
        })
        .collect();
    // Each row in a few runs of tokens, so that the rows' scans spread over the threads.
    let per = vocab.div_ceil(RUNS_PER_ROW);
    let mut runs: Vec<(usize, usize)> = (0..rows)
        .flat_map(|i| (0..vocab).step_by(per).map(move |first| (i, first)))
        .collect();
    let scans = crate::parallel::map_items(&mut runs, |&mut (i, first)| {
        let row = &logits[i * vocab..(i + 1) * vocab];
        scan(&row[first..(first + per).min(vocab)], first as u32, k)
    });
    let mut scans = scans.into_iter();
    (0..rows)
        .map(|i| {
            let parts: Vec<Scan> = scans.by_ref().take(vocab.div_ceil(per)).collect();
            merge(parts, &fixed[i], k).unwrap_or_else(|| {
                let mut row = logits[i * vocab..(i + 1) * vocab].to_vec();
                for &(t, v) in &fixed[i] {
                    row[t as usize] = v;
                }
                Logits::Every(row)
            })
        })
        .collect()
}

/// Runs of tokens each row is scanned in.
const RUNS_PER_ROW: usize = 4;

/// Tokens whose largest logit a scan takes first, to skip the chunks that cannot matter.
const CHUNK: usize = 16;

/// What a run of one row holds of the row's shortlist.
struct Scan {
    /// The run's largest logits above −∞, at most `k`.
    top: Vec<f32>,
    /// Every token of the run at or above [`below`] of the run's k-th largest logit (a
    /// superset: the row's k-th largest is no lower), in id order.
    listed: Vec<(u32, f32)>,
    /// A logit was NaN or +∞.
    odd: bool,
}

/// Scans `values`, the logits of tokens `first..`.
fn scan(values: &[f32], first: u32, k: usize) -> Scan {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    // First each chunk's largest logit: at least k logits are at or above the k-th largest
    // of these, so the run's k-th largest is too, and only chunks that reach below() of it
    // can hold what the run lists.
    let mut odd = false;
    let maxima: Vec<f32> = values
        .chunks(CHUNK)
        .map(|c| match c.try_into() {
            Ok(c) => {
                let (most, nan) = chunk_max(c);
                odd |= nan;
                most
            }
            Err(_) => c.iter().fold(f32::NEG_INFINITY, |m, &v| {
                odd |= v.is_nan();
                if v > m {
                    v
                } else {
                    m
                }
            }),
        })
        .collect();
    odd |= maxima.contains(&f32::INFINITY);
    if odd {
        return Scan {
            top: Vec::new(),
            listed: Vec::new(),
            odd,
        };
    }
    let mut floor = if maxima.len() >= k {
        below(kth_largest(&maxima, k))
    } else {
        f32::NEG_INFINITY
    };
    let mut top: BinaryHeap<Reverse<Total>> = BinaryHeap::with_capacity(k + 1);
    let mut listed = Vec::new();
    for ((c, chunk), &most) in values.chunks(CHUNK).enumerate().zip(&maxima) {
        if most < floor || most == f32::NEG_INFINITY {
            continue;
        }
        for (j, &v) in chunk.iter().enumerate() {
            if v < floor || v == f32::NEG_INFINITY {
                continue;
            }
            if top.len() < k {
                top.push(Reverse(Total(v)));
            } else if v > top.peek().expect("k > 0").0 .0 {
                *top.peek_mut().expect("k > 0") = Reverse(Total(v));
            }
            listed.push((first + (c * CHUNK + j) as u32, v));
            if top.len() == k {
                floor = floor.max(below(top.peek().expect("k > 0").0 .0));
            }
        }
    }
    listed.retain(|&(_, v)| v >= floor);
    Scan {
        top: top.into_iter().map(|t| t.0 .0).collect(),
        listed,
        odd,
    }
}

/// The largest of `c` (when none is NaN) and whether one is NaN.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn chunk_max(c: &[f32; CHUNK]) -> (f32, bool) {
    use core::arch::wasm32::*;
    // SAFETY: `c` is 16 f32, four unaligned v128 loads.
    let v: [v128; 4] = std::array::from_fn(|i| unsafe { v128_load(c.as_ptr().add(4 * i).cast()) });
    let nan = v
        .iter()
        .fold(i32x4_splat(0), |a, &x| v128_or(a, f32x4_ne(x, x)));
    let m = f32x4_pmax(f32x4_pmax(v[0], v[1]), f32x4_pmax(v[2], v[3]));
    let m = f32x4_pmax(m, i32x4_shuffle::<2, 3, 0, 1>(m, m));
    let m = f32x4_pmax(m, i32x4_shuffle::<1, 0, 3, 2>(m, m));
    (f32x4_extract_lane::<0>(m), v128_any_true(nan))
}

/// The largest of `c` (when none is NaN) and whether one is NaN, in halves, lane by lane: what
/// compiles to a few SIMD instructions, where a running maximum is a chain of scalar ones.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn chunk_max(c: &[f32; CHUNK]) -> (f32, bool) {
    let mut m = *c;
    let nan = c.iter().fold(false, |any, v| any | v.is_nan());
    let mut w = CHUNK / 2;
    while w > 0 {
        for i in 0..w {
            m[i] = if m[i + w] > m[i] { m[i + w] } else { m[i] };
        }
        w /= 2;
    }
    (m[0], nan)
}

/// One row's shortlist from its runs' scans and its `fixed` tokens (with their logits); `None`
/// where the row must be kept whole.
fn merge(parts: Vec<Scan>, fixed: &[(u32, f32)], k: usize) -> Option<Logits> {
    if parts.iter().any(|p| p.odd) {
        return None;
    }
    let tops: Vec<f32> = parts.iter().flat_map(|p| p.top.iter().copied()).collect();
    if tops.len() < k {
        return None;
    }
    let floor = below(kth_largest(&tops, k));
    let mut ids = Vec::new();
    let mut values = Vec::new();
    let mut fixed = fixed.iter().copied().peekable();
    for (id, v) in parts.into_iter().flat_map(|p| p.listed) {
        if v < floor {
            continue;
        }
        while let Some((t, l)) = fixed.next_if(|&(t, _)| t < id) {
            ids.push(t);
            values.push(l);
        }
        ids.push(id);
        values.push(v);
    }
    for (t, l) in fixed {
        ids.push(t);
        values.push(l);
    }
    Some(Logits::Short { ids, values })
}
