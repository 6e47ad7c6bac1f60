//! Softmax and normalizations along the last axis: each is one dispatch, one row per
//! workgroup (CPU: per task), with the reductions kept in registers and shared memory.
use mia_runtime::prelude::*;

/// Softmax over the last axis, max-subtracted so logits in the thousands do not overflow.
#[kernel]
pub fn softmax(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    softmax(x, -1)
}

/// Log-softmax over the last axis.
#[kernel]
pub fn log_softmax(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    let s = x - x.max(-1);
    s - ln(exp(s).sum(-1))
}

/// Layer normalization over the last axis (biased variance, as PyTorch).
#[kernel]
pub fn layer_norm(
    x: Tensor<f32, N, D>,
    gamma: Tensor<f32, D>,
    beta: Tensor<f32, D>,
    eps: f32,
) -> Tensor<f32, N, D> {
    layer_norm(x, gamma, beta, eps)
}

/// RMS normalization over the last axis (LLaMA's).
#[kernel]
pub fn rms_norm(x: Tensor<f32, N, D>, gamma: Tensor<f32, D>, eps: f32) -> Tensor<f32, N, D> {
    rms_norm(x, gamma, eps)
}

/// `layer_norm(x + residual)`: the post-norm residual block of BERT, one dispatch.
#[kernel]
pub fn add_layer_norm(
    x: Tensor<f32, N, D>,
    residual: Tensor<f32, N, D>,
    gamma: Tensor<f32, D>,
    beta: Tensor<f32, D>,
    eps: f32,
) -> Tensor<f32, N, D> {
    layer_norm(x + residual, gamma, beta, eps)
}
