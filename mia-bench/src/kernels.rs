//! Kernels the suite needs beyond mia-kernels: the 4-op chain, and a `fusion = false` twin of
//! every fused kernel, so what fusion buys is measured rather than assumed. Each twin has the
//! same body as its fused kernel (mia-kernels' for the others).
use mia_runtime::prelude::*;

/// Four elementwise ops (multiply, add, ReLU, scale): fused, one pass reading `x` once.
#[kernel]
pub fn chain4(
    x: Tensor<f32, N, D>,
    a: Tensor<f32, D>,
    b: Tensor<f32, D>,
    c: f32,
) -> Tensor<f32, N, D> {
    relu(x * a + b) * c
}

/// [`chain4`] with each op its own pass (three intermediate tensors).
#[kernel(fusion = false)]
pub fn chain4_unfused(
    x: Tensor<f32, N, D>,
    a: Tensor<f32, D>,
    b: Tensor<f32, D>,
    c: f32,
) -> Tensor<f32, N, D> {
    relu(x * a + b) * c
}

/// `mia_kernels::bias_gelu` unfused.
#[kernel(fusion = false)]
pub fn bias_gelu_unfused(x: Tensor<f32, N, D>, b: Tensor<f32, D>) -> Tensor<f32, N, D> {
    gelu(x + b)
}

/// `mia_kernels::softmax` unfused.
#[kernel(fusion = false)]
pub fn softmax_unfused(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    softmax(x, -1)
}

/// `mia_kernels::layer_norm` unfused.
#[kernel(fusion = false)]
pub fn layer_norm_unfused(
    x: Tensor<f32, N, D>,
    gamma: Tensor<f32, D>,
    beta: Tensor<f32, D>,
    eps: f32,
) -> Tensor<f32, N, D> {
    layer_norm(x, gamma, beta, eps)
}

/// `mia_kernels::rms_norm` unfused.
#[kernel(fusion = false)]
pub fn rms_norm_unfused(
    x: Tensor<f32, N, D>,
    gamma: Tensor<f32, D>,
    eps: f32,
) -> Tensor<f32, N, D> {
    rms_norm(x, gamma, eps)
}

/// `mia_kernels::linear_gelu` unfused: the product, the bias add and GELU as three passes.
#[kernel(fusion = false)]
pub fn linear_gelu_unfused(
    x: Tensor<f32, M, K>,
    w: Tensor<f32, K, N>,
    bias: Tensor<f32, N>,
) -> Tensor<f32, M, N> {
    gelu(matmul(x, w) + bias)
}

/// `mia_kernels::attention` unfused, the naive form the flash kernel replaces: the scores'
/// product, scale, softmax and the second product as separate passes.
#[kernel(fusion = false)]
pub fn attention_unfused(
    q: Tensor<f32, H, T, E>,
    k: Tensor<f32, H, S, E>,
    v: Tensor<f32, H, S, E>,
    scale: f32,
) -> Tensor<f32, H, T, E> {
    matmul(softmax(matmul(q, transpose(k, -1, -2)) * scale, -1), v)
}
