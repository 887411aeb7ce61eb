//! Spreads independent pieces of work over the machine's threads: rayon's pool natively and in
//! the `threads` wasm build (Web Workers on shared memory), one thread in the plain wasm build.

/// Calls `f(first_item, chunk)` over `out`, which holds `items` items of `width` values each,
/// split into four runs of consecutive items per thread: few enough that a piece is worth a
/// Web Worker's wake-up, enough that a thread that wakes late takes a share of what is left
/// instead of leaving half the work to the others (one run per thread was 10% slower in
/// Chromium on 2 threads).
pub fn for_each_chunk<F>(out: &mut [f32], width: usize, items: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    {
        let threads = rayon::current_num_threads();
        if threads > 1 && items > 1 {
            use rayon::prelude::*;
            let per = items.div_ceil(threads * 4);
            out.par_chunks_mut((per * width).max(1))
                .enumerate()
                .for_each(|(i, c)| f(i * per, c));
            return;
        }
    }
    // One thread: on the caller's, without handing the work to a pool and waiting for it.
    let _ = (width, items);
    f(0, out);
}

/// Runs `f` on one of the pool's threads and waits for it: the matrix products inside then split
/// with cheap work-stealing joins (an idle thread takes half; if it is slow to wake, the running
/// thread does both halves) instead of a hand-off and a wake-up from outside the pool each.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    if rayon::current_num_threads() > 1 && rayon::current_thread_index().is_none() {
        let mut out = None;
        rayon::scope(|_| out = Some(f()));
        return out.expect("the scope ran f");
    }
    f()
}
