//! mia's runtime: the [`Device`] a kernel runs on, typed [`Tensor`]s, and the dispatch of
//! kernels that `#[kernel]` compiled at build time (CPU through rayon, GPU through wgpu).
//!
//! Users depend on this crate only; it re-exports the macros.

mod attention;
mod autotune;
mod chunk;
mod device;
mod error;
mod gather;
mod gemm;
#[cfg(feature = "gpu")]
mod gpu;
mod mask;
pub mod math;
mod plan;
mod pool;
#[doc(hidden)]
pub mod rt;
mod team;
mod tensor;
#[doc(hidden)]
pub mod testing;
pub mod weights;

pub use device::{Device, DeviceKind, DeviceLimits};
pub use error::{Error, Result, SizeOrigin};
pub use mia_macros::{graph, kernel};
pub use plan::{Dim, Io, Pass, PassKind, Plan};
pub use tensor::{DType, Element, IntoShape, Tensor};

/// Everything a kernel author needs: `use mia_runtime::prelude::*;`.
pub mod prelude {
    pub use crate::{graph, kernel, Device, Error, Plan, Tensor};
}
