//! Helpers for tests that run on every available device.
//!
//! A test machine without a GPU skips GPU tests with a note on stderr; CI sets
//! `MIA_REQUIRE_GPU=1` so that a missing or broken GPU fails the tests instead of skipping them.

use crate::Device;

fn gpu_required() -> bool {
    matches!(
        std::env::var("MIA_REQUIRE_GPU").as_deref(),
        Ok("1" | "true" | "yes")
    )
}

/// The GPU, or `None` (after printing why) when there is none and `MIA_REQUIRE_GPU` is not set.
///
/// # Panics
/// When there is no GPU and `MIA_REQUIRE_GPU=1`: the test must fail, not pass vacuously.
pub fn gpu() -> Option<Device> {
    match Device::gpu() {
        Ok(d) => Some(d),
        Err(e) if gpu_required() => panic!("MIA_REQUIRE_GPU=1 but no GPU is usable: {e}"),
        Err(e) => {
            eprintln!("skipping GPU test: {e}");
            None
        }
    }
}

/// The CPU, then the GPU if there is one (same rule as [`gpu`]).
pub fn devices() -> Vec<Device> {
    std::iter::once(Device::cpu()).chain(gpu()).collect()
}

/// Float64 references of the special functions, shared by mia's tests and examples.
pub mod reference {
    use std::f64::consts::{FRAC_1_SQRT_2, PI};

    /// erf: the all-positive series `e^-x²·2/√π·Σ 2^n x^(2n+1)/(2n+1)!!` (no cancellation)
    /// below 3, the continued fraction of erfc above.
    pub fn erf64(x: f64) -> f64 {
        let a = x.abs();
        let r = if a < 3.0 {
            erf_series(a)
        } else {
            1.0 - erfc_cf(a)
        };
        r.copysign(x)
    }

    /// erfc, relatively accurate in the right tail.
    pub fn erfc64(x: f64) -> f64 {
        if x < 0.0 {
            2.0 - erfc64(-x)
        } else if x < 3.0 {
            1.0 - erf_series(x)
        } else {
            erfc_cf(x)
        }
    }

    fn erf_series(x: f64) -> f64 {
        let x2 = x * x;
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term > 1e-18 * sum {
            n += 1.0;
            term *= 2.0 * x2 / (2.0 * n + 1.0);
            sum += term;
        }
        sum * (-x2).exp() * 2.0 / PI.sqrt()
    }

    /// erfc(x) = e^-x²/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))), for x >= 3.
    fn erfc_cf(x: f64) -> f64 {
        let mut f = x;
        for k in (1..=120).rev() {
            f = x + (k as f64 * 0.5) / f;
        }
        (-x * x).exp() / (f * PI.sqrt())
    }

    /// The logistic function, without overflow for either sign.
    pub fn sigmoid64(x: f64) -> f64 {
        if x >= 0.0 {
            1.0 / (1.0 + (-x).exp())
        } else {
            let e = x.exp();
            e / (1.0 + e)
        }
    }

    /// Exact GELU `x·Φ(x)`, without cancellation in the left tail (-0 at -inf).
    pub fn gelu64(x: f64) -> f64 {
        if x == f64::NEG_INFINITY {
            -0.0
        } else {
            0.5 * x * erfc64(-x * FRAC_1_SQRT_2)
        }
    }

    /// GELU's tanh form as the identical `x·σ(2·√(2/π)·(x + 0.044715·x³))` (-0 at -inf).
    pub fn gelu_tanh64(x: f64) -> f64 {
        if x == f64::NEG_INFINITY {
            -0.0
        } else {
            x * sigmoid64(2.0 * (2.0 / PI).sqrt() * (x + 0.044715 * x * x * x))
        }
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
                assert!((super::erf64(x) - want).abs() < 1e-15, "erf({x})");
                assert!((super::erf64(-x) + want).abs() < 1e-15);
            }
        }
    }
}
