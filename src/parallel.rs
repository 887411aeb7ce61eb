//! Spreads independent pieces of work over the machine's threads: rayon's pool natively and in
//! the `threads` wasm build (Web Workers on shared memory), one thread in the plain wasm build.

/// Calls `f(first_item, chunk)` over `out`, which holds `items` items of `width` values each,
/// split into one run of consecutive items per thread: waking a Web Worker costs more than a
/// small piece of work, so fewer, larger pieces win.
pub fn for_each_chunk<F>(out: &mut [f32], width: usize, items: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    {
        let threads = rayon::current_num_threads();
        if threads > 1 && items > 1 {
            use rayon::prelude::*;
            let per = items.div_ceil(threads);
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
