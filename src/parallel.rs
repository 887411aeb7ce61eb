//! Spreads independent pieces of work over the machine's threads: rayon's pool natively and in
//! the `threads` wasm build (Web Workers on shared memory), one thread in the plain wasm build.

/// Whether the `threads` build's pool of Web Workers has started ([`pool_started`]). Until then
/// work stays on the caller's thread and rayon is not touched: rayon's first use builds its
/// global pool, and in wasm, where it cannot spawn threads itself, that would be a pool of one
/// for good, which the Web Workers' pool could then not replace. The worker starts the pool
/// after a page's first model is ready, so that the Workers' start-up does not slow that load.
#[cfg(target_arch = "wasm32")]
static POOL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks the `threads` build's pool as started (after `initThreadPool` resolved).
#[cfg(all(target_arch = "wasm32", feature = "threads"))]
pub fn pool_started() {
    POOL.store(true, std::sync::atomic::Ordering::Release);
}

/// Threads the work spreads over now: rayon's, once there is a pool to use.
pub fn threads() -> usize {
    #[cfg(target_arch = "wasm32")]
    if !cfg!(feature = "threads") || !POOL.load(std::sync::atomic::Ordering::Acquire) {
        return 1;
    }
    rayon::current_num_threads()
}

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
        if threads() > 1 && items > 1 {
            use rayon::prelude::*;
            let per = items.div_ceil(pieces_for(items));
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

/// `f` of every item of `items`, in order, the items spread over the threads.
pub fn map_items<T: Send, R: Send>(
    items: &mut [T],
    f: impl Fn(&mut T) -> R + Sync + Send,
) -> Vec<R> {
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    if threads() > 1 && items.len() > 1 {
        use rayon::prelude::*;
        return items.par_iter_mut().map(f).collect();
    }
    items.iter_mut().map(f).collect()
}

/// A matrix product's `m × rows` values, row-major, computed by output row: `piece(range,
/// out)` writes output rows `range` for all `m` activation rows, `out[i]` holding activation
/// row i's values of those outputs (the result's own memory, so nothing is copied or
/// transposed afterwards), the ranges spread over the threads as [`for_each_chunk`] spreads
/// its items. Ranges start at multiples of `align` and are whole multiples of it long, for
/// weights held in tiles of `align` rows; the last may run past `rows` (to the next multiple of
/// `align`), where its `out[i]` are shorter than the range.
pub fn by_output_rows<F>(rows: usize, m: usize, align: usize, piece: F) -> Vec<f32>
where
    F: Fn(std::ops::Range<usize>, &mut [&mut [f32]]) + Sync + Send,
{
    let mut out = vec![0f32; m * rows];
    if m == 0 || rows == 0 {
        return out;
    }
    let units = rows.div_ceil(align);
    let per = units.div_ceil(pieces_for(units)) * align;
    // parts[p][i]: activation row i's outputs of piece p.
    let mut parts: Vec<(usize, Vec<&mut [f32]>)> = (0..rows.div_ceil(per))
        .map(|p| (p * per, Vec::with_capacity(m)))
        .collect();
    for row in out.chunks_mut(rows) {
        for (part, values) in parts.iter_mut().zip(row.chunks_mut(per)) {
            part.1.push(values);
        }
    }
    let held = units * align;
    map_items(&mut parts, |(first, out)| {
        piece(*first..held.min(*first + per), out)
    });
    out
}

/// `then(o, v)` for every value `v` of output features `first..` in `out` (a piece of
/// [`by_output_rows`]): the bias and activation of a product, on the thread that computed it.
pub fn apply(first: usize, out: &mut [&mut [f32]], then: impl Fn(usize, f32) -> f32) {
    for row in out.iter_mut() {
        for (o, v) in (first..).zip(row.iter_mut()) {
            *v = then(o, *v);
        }
    }
}

/// Pieces to split `items` items into: four runs per thread (see [`for_each_chunk`]), one
/// without a pool.
fn pieces_for(items: usize) -> usize {
    let threads = threads();
    if threads > 1 {
        items.min(threads * 4)
    } else {
        1
    }
}

/// Empty looks for work after which a thread kept awake by [`on_pool`] lets itself sleep: a
/// look took 48 ns natively here, so this is about a millisecond (a few in wasm), against
/// tens of microseconds of serial work between two products.
#[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
const MAX_IDLE_ROUNDS: u32 = 20_000;

/// Runs `f` on one of the pool's threads and waits for it, with the pool's other threads kept
/// awake and looking for work until `f` returns (or nothing has come for [`MAX_IDLE_ROUNDS`]
/// looks): the matrix products inside then split with cheap work-stealing joins that the
/// others pick up at once. Left alone, an idle rayon thread
/// falls asleep after a few dozen empty rounds — in wasm within microseconds, as yielding does
/// nothing there — and the serial work between two products (a layer norm, a residual add)
/// is longer, so every product (60 a step) waited for a Web Worker to wake.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    if threads() > 1 && rayon::current_thread_index().is_none() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let done = AtomicBool::new(false);
        let done = &done;
        let mut out = None;
        rayon::scope(|s| {
            let owner = rayon::current_thread_index();
            for _ in 1..rayon::current_num_threads() {
                s.spawn(move |_| {
                    // The thread running `f` may pop this job itself while it waits inside a
                    // join; staying would leave `f` waiting on its own thread forever.
                    if rayon::current_thread_index() == owner {
                        return;
                    }
                    // A thread may also have taken this job while waiting inside a piece of
                    // `f`'s work (or another step's), which then cannot finish until this
                    // returns: so it also returns once nothing has come to do for a while,
                    // far longer than the serial work between two products.
                    let mut idle = 0;
                    while !done.load(Ordering::Acquire) && idle < MAX_IDLE_ROUNDS {
                        if rayon::yield_now() == Some(rayon::Yield::Executed) {
                            idle = 0;
                        } else {
                            idle += 1;
                            std::hint::spin_loop();
                        }
                    }
                });
            }
            out = Some(f());
            done.store(true, Ordering::Release);
        });
        return out.expect("the scope ran f");
    }
    f()
}
