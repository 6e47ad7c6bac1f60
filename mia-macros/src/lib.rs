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
/// A whole model compiled at build time: weights named by safetensors key, sub-models,
/// repeated layers, and `forward` methods written in the kernel DSL.
///
/// ```ignore
/// graph! {
///     /// Docs and visibility are kept on the generated struct.
///     pub struct Encoder {
///         emb: Tensor<f32, 30522, 384> = "embeddings.word_embeddings.weight",
///         layers: [Layer; 6] = "encoder.layer.{i}",   // repeated: `{i}` is the layer number
///         head: Head = "head",                        // a sub-model: a key prefix
///     }
///     struct Layer {
///         w: Tensor<f32, 384, 384> = "dense.weight",  // keys below the layer's prefix
///         b: Tensor<f32, 384> = "dense.bias",
///     }
///     struct Head { g: Tensor<f32, 384> = "norm.weight" }
///     impl Layer {
///         fn forward(&self, x: Tensor<f32, B, T, 384>) -> Tensor<f32, B, T, 384> {
///             x + gelu(matmul(x, transpose(self.w, 0, 1)) + self.b)
///         }
///     }
///     impl Head {
///         fn forward(&self, x: Tensor<f32, B, T, 384>) -> Tensor<f32, B, T, 384> {
///             rms_norm(x, self.g, 1e-6)
///         }
///     }
///     impl Encoder {
///         pub fn forward(&self, ids: Tensor<i32, B, T>) -> Tensor<f32, B, T, 384> {
///             let mut x = gather(self.emb, ids);
///             for layer in self.layers {
///                 x = layer.forward(x);
///             }
///             self.head.forward(x)
///         }
///     }
/// }
/// ```
///
/// - **Structs.** The first struct is the model; each field is a weight (`Tensor<dtype, ..>`
///   with literal sizes, loaded from the key after `=`), a sub-model (`Name = "prefix"`), or
///   repeated layers (`[Name; N] = "prefix.{i}"`). Keys of a sub-model's weights are its prefix,
///   a dot, and their own key.
/// - **Methods.** Bodies use the kernel DSL plus `let mut`, reassignment `x = ...;`, and
///   `for layer in self.layers { ... }` (unrolled). `self.w` names a weight; `self.sub.m(..)`,
///   `self.layers[2].m(..)` and `layer.m(..)` call a sub-model's method, which is inlined.
///   A method's parameter and return types are checked at each call, with the error at the
///   argument. Shape symbols (`B`, `T`) are shared by the whole model: they are bound by the
///   model's `forward` arguments.
/// - **Compilation.** The model's `forward` becomes one kernel over its inputs and every
///   weight, so fusion, attention recognition and the memory plan see the whole model:
///   intermediates are allocated before the pass that writes them and freed after the last
///   pass that reads them (`plan().peak_bytes(..)` against `naive_bytes(..)`).
/// - **Generated.** The struct, with `load(&Device, &SafeTensors) -> Result<Self>` (a missing
///   key or a wrong shape or dtype is an error naming the key), `forward(&self, ..) ->
///   Result<..>` (tensors by reference, like a kernel), `plan()` and `WEIGHTS` (every key and
///   shape, in parameter order).
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
