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
