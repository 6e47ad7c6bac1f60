//! mia's standard kernel library, written in the mia DSL itself: activations, softmax and
//! normalizations over the last axis, matrix products with fused epilogues. Each function takes tensors of any leading shape `N`
//! (flatten batch dimensions first) and returns a `Result`; each has a module of the same name
//! with its fusion `plan()` and `WGSL`.

mod activations;
mod norms;
mod products;

pub use activations::*;
pub use norms::*;
pub use products::*;
