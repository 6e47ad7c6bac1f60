//! Shared helpers for the example programs: float64 references and simple timing.

use std::time::{Duration, Instant};

pub use mia_runtime::testing::reference::{erf64, gelu64};

/// ‖got − want‖ / ‖want‖ in float64.
pub fn rel_error(got: &[f32], want: &[f64]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += (g as f64 - w).powi(2);
        den += w * w;
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// Median wall time of `f` over `samples` runs, after warming up for `warmup`.
pub fn median_time(warmup: Duration, samples: usize, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    while start.elapsed() < warmup {
        f();
    }
    let mut times: Vec<Duration> = (0..samples.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Multi-threaded memcpy of `src` into `dst` in rayon-sized chunks: the CPU roofline.
pub fn par_copy(dst: &mut [f32], src: &[f32]) {
    use rayon::prelude::*;
    let chunk = (src.len() / (4 * rayon::current_num_threads())).max(1 << 14);
    dst.par_chunks_mut(chunk)
        .zip(src.par_chunks(chunk))
        .for_each(|(d, s)| d.copy_from_slice(s));
}
