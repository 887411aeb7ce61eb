//! Spreads independent pieces of work over the machine's threads: rayon's pool natively, one
//! thread in wasm (where candle's kernels are serial too).

/// Calls `f(first_item, chunk)` for consecutive chunks of `out`, each `items_per_chunk × width`
/// values long (the last one shorter), possibly on several threads at once.
pub fn for_each_chunk<F>(out: &mut [f32], width: usize, items_per_chunk: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    let len = (items_per_chunk * width).max(1);
    #[cfg(not(target_arch = "wasm32"))]
    if rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        out.par_chunks_mut(len)
            .enumerate()
            .for_each(|(i, c)| f(i * items_per_chunk, c));
        return;
    }
    // One thread: on the caller's, without handing the work to a pool and waiting for it.
    for (i, c) in out.chunks_mut(len).enumerate() {
        f(i * items_per_chunk, c);
    }
}
