//! Elementwise activations: each is one pass over memory.
use mia_runtime::prelude::*;

/// Exact GELU, `0.5·x·(1 + erf(x/√2))` (BERT's).
#[kernel]
pub fn gelu(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x.gelu()
}

/// GELU with the tanh approximation (GPT-2's).
#[kernel]
pub fn gelu_tanh(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x.gelu_tanh()
}

/// SiLU (swish), `x·σ(x)`.
#[kernel]
pub fn silu(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x.silu()
}

#[kernel]
pub fn relu(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x.relu()
}

#[kernel]
pub fn sigmoid(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x.sigmoid()
}

#[kernel]
pub fn tanh(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x.tanh()
}

/// `gelu(x + b)` with a bias broadcast over rows: the epilogue of a linear layer.
#[kernel]
pub fn bias_gelu(x: Tensor<f32, N, D>, b: Tensor<f32, D>) -> Tensor<f32, N, D> {
    gelu(x + b)
}

/// SwiGLU's gate, `silu(a) * b` (LLaMA's feed-forward).
#[kernel]
pub fn swiglu(a: Tensor<f32, N>, b: Tensor<f32, N>) -> Tensor<f32, N> {
    silu(a) * b
}
