//! Shared helpers for the example programs: float64 references and simple timing.

use std::time::{Duration, Instant};

/// erf in float64 (Taylor series below 3, continued fraction for erfc above; error ~1e-14),
/// for references.
pub fn erf64(x: f64) -> f64 {
    let a = x.abs();
    if a.is_nan() {
        return f64::NAN;
    }
    let r = if a < 3.0 {
        let (mut term, mut sum, mut n) = (a, a, 0.0f64);
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -a * a / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        let mut t = a;
        for k in (1..=80).rev() {
            t = a + (k as f64 / 2.0) / t;
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / t
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// Exact GELU in float64.
pub fn gelu64(x: f64) -> f64 {
    0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2))
}

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

#[cfg(test)]
mod tests {
    #[test]
    fn erf64_matches_known_values() {
        for (x, want) in [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.5, 0.999_999_256_901_627_7),
        ] {
            assert!((super::erf64(x) - want).abs() < 1e-14, "erf({x})");
            assert!((super::erf64(-x) + want).abs() < 1e-14);
        }
    }
}
