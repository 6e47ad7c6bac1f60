//! mia's compiler, run during macro expansion:
//! `ast` (parse) → `check` (dtypes, symbolic shapes; builds the `graph`) → `fuse` (passes) →
//! `lower` (loop IR) → `emit_cpu` / `emit_wgsl` → `validate` (naga) → `expand`.
//! Every stage works on `proc_macro2` tokens so it can be unit-tested.

mod ast;
mod attend;
mod check;
mod dims;
mod emit_cpu;
mod emit_wgsl;
mod expand;
mod fuse;
mod graph;
mod lower;
mod model;
mod validate;

use proc_macro::TokenStream;

/// Compiles a tensor function into fused CPU and GPU kernels at build time.
///
/// ```ignore
/// #[kernel]
/// pub fn bias_gelu(x: Tensor<f32, N, D>, b: Tensor<f32, D>) -> Tensor<f32, N, D> {
///     gelu(x + b)
/// }
/// ```
/// becomes `pub fn bias_gelu(x: &Tensor<f32>, b: &Tensor<f32>) -> Result<Tensor<f32>>` plus a
/// module `bias_gelu` with `plan()` and `WGSL`. Option: `#[kernel(fusion = false)]` compiles
/// every op as its own pass (for measuring fusion).
#[proc_macro_attribute]
pub fn kernel(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::kernel_guarded(attr.into(), item.into()).into()
}
/// A whole model: structs of named weights (safetensors keys), sub-models and repeated
/// layers, and their `forward` methods in the kernel DSL, compiled into one fused, planned
/// kernel with a generated `load` / `forward` / `plan`. See the `model` module docs.
#[proc_macro]
pub fn graph(input: TokenStream) -> TokenStream {
    let fallback = input.clone();
    match std::panic::catch_unwind(move || model::graph(input.into())) {
        Ok(ts) => ts.into(),
        Err(_) => {
            let _ = fallback;
            quote::quote!(::core::compile_error!("internal error in mia's graph! (please report this model)");).into()
        }
    }
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;
