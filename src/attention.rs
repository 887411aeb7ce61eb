//! Inference attention: the key/value cache of one layer, and each query against it.
//!
//! Written out rather than as candle ops because candle's way costs more than the arithmetic:
//! each step copied every layer's whole cache twice (`kᵀ` and `v` made contiguous for its
//! matmuls) and ran serially in wasm. Here keys and values stay where the cache holds them,
//! and the (batch row, head) pairs split over the threads like the matrix products do.
//! The numbers follow candle's (and HF's): scores q·k scaled, softmax as exp(x − max) / Σ,
//! then the probabilities times the values.

use crate::error::{Error, Result};
use crate::parallel;

/// Keys and values of every position processed so far, for each batch row and head, laid out
/// (B, nh, capacity, hs) so one head's keys are consecutive.
pub struct LayerCache {
    b: usize,
    nh: usize,
    hs: usize,
    capacity: usize,
    len: usize,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl LayerCache {
    /// An empty cache with room for `capacity` positions (it grows when a pass needs more).
    pub fn new(capacity: usize) -> Self {
        Self {
            b: 0,
            nh: 0,
            hs: 0,
            capacity: capacity.max(1),
            len: 0,
            k: Vec::new(),
            v: Vec::new(),
        }
    }

    /// Appends the keys and values of `t` new positions of `b` rows, taken from `qkv`, the
    /// attention's input projection (B, T, 3C): queries, then keys, then values, nh × hs each.
    pub fn append(&mut self, qkv: &[f32], b: usize, t: usize, nh: usize, hs: usize) -> Result<()> {
        let c = nh * hs;
        if qkv.len() != b * t * 3 * c {
            return Err(Error::Parameter("attention input of the wrong size".into()));
        }
        if self.len == 0 {
            (self.b, self.nh, self.hs) = (b, nh, hs);
        } else if (self.b, self.nh, self.hs) != (b, nh, hs) {
            return Err(Error::Parameter(format!(
                "a batch of {b} rows after {} in the cache",
                self.b
            )));
        }
        if self.len + t > self.capacity || self.k.is_empty() {
            self.resize((self.len + t).max(self.capacity));
        }
        for bi in 0..b {
            for ti in 0..t {
                let row = &qkv[(bi * t + ti) * 3 * c..][..3 * c];
                for h in 0..nh {
                    let at = self.at(bi, h, self.len + ti);
                    self.k[at..at + hs].copy_from_slice(&row[c + h * hs..][..hs]);
                    self.v[at..at + hs].copy_from_slice(&row[2 * c + h * hs..][..hs]);
                }
            }
        }
        self.len += t;
        Ok(())
    }

    /// Where position `s` of row `bi`, head `h` starts.
    fn at(&self, bi: usize, h: usize, s: usize) -> usize {
        ((bi * self.nh + h) * self.capacity + s) * self.hs
    }

    /// Room for `capacity` positions, keeping what is held.
    fn resize(&mut self, capacity: usize) {
        let old = std::mem::replace(self, Self::new(capacity));
        (self.b, self.nh, self.hs, self.len) = (old.b, old.nh, old.hs, old.len);
        let size = self.b * self.nh * self.capacity * self.hs;
        self.k = vec![0.0; size];
        self.v = vec![0.0; size];
        if old.len == 0 {
            return;
        }
        for bi in 0..self.b {
            for h in 0..self.nh {
                let (from, to, n) = (old.at(bi, h, 0), self.at(bi, h, 0), old.len * old.hs);
                self.k[to..to + n].copy_from_slice(&old.k[from..from + n]);
                self.v[to..to + n].copy_from_slice(&old.v[from..from + n]);
            }
        }
    }

    /// Keeps batch rows `rows`, in that order; a row may repeat.
    pub fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.b.max(1)) {
            return Err(Error::Parameter(format!("no batch row {bad} in the cache")));
        }
        if self.k.is_empty() {
            self.b = rows.len();
            return Ok(());
        }
        let per_row = self.nh * self.capacity * self.hs;
        let pick = |src: &[f32]| -> Vec<f32> {
            rows.iter()
                .flat_map(|&r| src[r * per_row..(r + 1) * per_row].iter().copied())
                .collect()
        };
        (self.k, self.v) = (pick(&self.k), pick(&self.v));
        self.b = rows.len();
        Ok(())
    }

    /// The attention output (B, T, C) of the `t` queries in `qkv` (as given to [`append`],
    /// which must have run): query i, at position len − t + i, sees positions 0..=that.
    ///
    /// [`append`]: LayerCache::append
    pub fn attend(&self, qkv: &[f32], t: usize, scale: f32) -> Vec<f32> {
        let (b, nh, hs) = (self.b, self.nh, self.hs);
        let c = nh * hs;
        let past = self.len - t;
        // (B, nh, T, hs): each (row, head) pair's outputs together, so pairs can split.
        let mut heads = vec![0f32; b * nh * t * hs];
        parallel::for_each_chunk(&mut heads, t * hs, b * nh, |first, out| {
            let mut p = vec![0f32; self.len];
            for (i, out) in out.chunks_exact_mut(t * hs).enumerate() {
                let (bi, h) = ((first + i) / nh, (first + i) % nh);
                let keys = &self.k[self.at(bi, h, 0)..];
                let values = &self.v[self.at(bi, h, 0)..];
                for (ti, y) in out.chunks_exact_mut(hs).enumerate() {
                    let q = &qkv[(bi * t + ti) * 3 * c + h * hs..][..hs];
                    let p = &mut p[..past + ti + 1];
                    for (s, score) in p.iter_mut().enumerate() {
                        *score = crate::dense::dot(q, &keys[s * hs..][..hs]) * scale;
                    }
                    softmax(p);
                    y.fill(0.0);
                    for (s, &w) in p.iter().enumerate() {
                        for (y, &v) in y.iter_mut().zip(&values[s * hs..][..hs]) {
                            *y += w * v;
                        }
                    }
                }
            }
        });
        let mut y = vec![0f32; b * t * c];
        for bi in 0..b {
            for h in 0..nh {
                for ti in 0..t {
                    let from = ((bi * nh + h) * t + ti) * hs;
                    y[(bi * t + ti) * c + h * hs..][..hs].copy_from_slice(&heads[from..from + hs]);
                }
            }
        }
        y
    }
}

/// In place, as candle's `softmax_last_dim`: exp(x − max) / Σ.
fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention of query `q` over `keys`/`values` (one head), in f64, straight from the formula.
    fn reference(q: &[f32], keys: &[&[f32]], values: &[&[f32]], scale: f64) -> Vec<f64> {
        let scores: Vec<f64> = keys
            .iter()
            .map(|k| {
                q.iter()
                    .zip(*k)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum::<f64>()
                    * scale
            })
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        (0..q.len())
            .map(|d| {
                e.iter()
                    .zip(values)
                    .map(|(w, v)| w / sum * f64::from(v[d]))
                    .sum()
            })
            .collect()
    }

    #[test]
    fn cached_attention_follows_the_formula_across_growth_and_row_selection() {
        let (nh, hs) = (2, 12);
        let c = nh * hs;
        let mut seed = 3u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        // Every position's q, k, v per batch row, as the passes hand them over.
        let mut history: Vec<Vec<Vec<f32>>> = vec![Vec::new(); 2];
        let mut cache = LayerCache::new(1);
        let passes: [(usize, usize); 3] = [(2, 3), (2, 1), (3, 2)];
        for (pass, &(b, t)) in passes.iter().enumerate() {
            if pass == 2 {
                // Row 1, row 0, row 1 again: as a prompt fanned out to samples.
                cache.select_rows(&[1, 0, 1]).unwrap();
                history = vec![history[1].clone(), history[0].clone(), history[1].clone()];
            }
            let qkv: Vec<f32> = (0..b * t * 3 * c).map(|_| next()).collect();
            for (bi, h) in history.iter_mut().enumerate() {
                for ti in 0..t {
                    h.push(qkv[(bi * t + ti) * 3 * c..][..3 * c].to_vec());
                }
            }
            cache.append(&qkv, b, t, nh, hs).unwrap();
            let y = cache.attend(&qkv, t, 0.3);
            for bi in 0..b {
                let seen = history[bi].len();
                for ti in 0..t {
                    let upto = seen - t + ti + 1;
                    for h in 0..nh {
                        let q = &qkv[(bi * t + ti) * 3 * c + h * hs..][..hs];
                        let keys: Vec<&[f32]> = history[bi][..upto]
                            .iter()
                            .map(|r| &r[c + h * hs..][..hs])
                            .collect();
                        let values: Vec<&[f32]> = history[bi][..upto]
                            .iter()
                            .map(|r| &r[2 * c + h * hs..][..hs])
                            .collect();
                        let want = reference(q, &keys, &values, 0.3);
                        let got = &y[(bi * t + ti) * c + h * hs..][..hs];
                        for (g, w) in got.iter().zip(&want) {
                            assert!((f64::from(*g) - w).abs() < 1e-6, "pass {pass}: {g} vs {w}");
                        }
                    }
                }
            }
        }
        assert!(cache.select_rows(&[3]).is_err());
        assert!(
            cache.append(&[0.0; 3 * 24], 1, 1, nh, hs).is_err(),
            "a batch of another size"
        );
    }
}
