//! Matrix products and the layers built on them. Each is one dispatch: the bias, activation,
//! residual or second product is the epilogue of the tiled product (see `plan()`).
use mia_runtime::prelude::*;

/// `a · b` for matrices.
#[kernel]
pub fn matmul(a: Tensor<f32, M, K>, b: Tensor<f32, K, N>) -> Tensor<f32, M, N> {
    matmul(a, b)
}

/// Batched product with a shared right operand: `[B, M, K] x [K, N]`.
#[kernel]
pub fn matmul_batched(a: Tensor<f32, B, M, K>, b: Tensor<f32, K, N>) -> Tensor<f32, B, M, N> {
    matmul(a, b)
}

/// `a · bᵀ` with `b` stored `[N, K]` (PyTorch's `Linear` weight layout): a strided view,
/// no copy.
#[kernel]
pub fn matmul_nt(a: Tensor<f32, M, K>, b: Tensor<f32, N, K>) -> Tensor<f32, M, N> {
    matmul(a, transpose(b, -1, -2))
}

/// A linear layer, `x · w + bias`.
#[kernel]
pub fn linear(
    x: Tensor<f32, M, K>,
    w: Tensor<f32, K, N>,
    bias: Tensor<f32, N>,
) -> Tensor<f32, M, N> {
    matmul(x, w) + bias
}

/// A linear layer with exact GELU: BERT's intermediate layer.
#[kernel]
pub fn linear_gelu(
    x: Tensor<f32, M, K>,
    w: Tensor<f32, K, N>,
    bias: Tensor<f32, N>,
) -> Tensor<f32, M, N> {
    gelu(matmul(x, w) + bias)
}

/// A linear layer with a residual: `x · w + bias + residual`.
#[kernel]
pub fn linear_residual(
    x: Tensor<f32, M, K>,
    w: Tensor<f32, K, N>,
    bias: Tensor<f32, N>,
    residual: Tensor<f32, M, N>,
) -> Tensor<f32, M, N> {
    matmul(x, w) + bias + residual
}

/// The gated feed-forward input of LLaMA-style models, `silu(x · w1) * (x · w3)`: both
/// products share the packed `x` in one pass.
#[kernel]
pub fn swiglu_gate(
    x: Tensor<f32, M, K>,
    w1: Tensor<f32, K, N>,
    w3: Tensor<f32, K, N>,
) -> Tensor<f32, M, N> {
    silu(matmul(x, w1)) * matmul(x, w3)
}

/// Scaled dot-product attention per head, `softmax(q·kᵀ·scale)·v`: recognised as flash
/// attention, one dispatch with an online softmax (the T×S scores never reach memory).
#[kernel]
pub fn attention(
    q: Tensor<f32, H, T, E>,
    k: Tensor<f32, H, S, E>,
    v: Tensor<f32, H, S, E>,
    scale: f32,
) -> Tensor<f32, H, T, E> {
    matmul(softmax(matmul(q, transpose(k, -1, -2)) * scale, -1), v)
}

/// Batched attention with an additive mask over keys (0 to attend, a large negative number
/// for padding), broadcast over heads and queries: BERT's encoder attention.
#[kernel]
pub fn attention_masked(
    q: Tensor<f32, B, H, T, E>,
    k: Tensor<f32, B, H, S, E>,
    v: Tensor<f32, B, H, S, E>,
    mask: Tensor<f32, B, 1, 1, S>,
    scale: f32,
) -> Tensor<f32, B, H, T, E> {
    matmul(
        softmax(matmul(q, transpose(k, -1, -2)) * scale + mask, -1),
        v,
    )
}

/// Causal (decoder) attention per head, `softmax(causal(q·kᵀ·scale))·v`: key `j` is visible
/// to query `i` when `j <= i + (S − T)` (bottom-right aligned, so with `T < S` the queries
/// are the last `T` positions of a KV cache of `S`). One flash-attention dispatch; masked
/// key blocks are skipped.
#[kernel]
pub fn attention_causal(
    q: Tensor<f32, H, T, E>,
    k: Tensor<f32, H, S, E>,
    v: Tensor<f32, H, S, E>,
    scale: f32,
) -> Tensor<f32, H, T, E> {
    matmul(
        softmax(causal(matmul(q, transpose(k, -1, -2)) * scale), -1),
        v,
    )
}

/// Causal attention with an additive padding mask over keys, broadcast over heads and
/// queries: one flash-attention dispatch.
#[kernel]
pub fn attention_causal_masked(
    q: Tensor<f32, B, H, T, E>,
    k: Tensor<f32, B, H, S, E>,
    v: Tensor<f32, B, H, S, E>,
    mask: Tensor<f32, B, 1, 1, S>,
    scale: f32,
) -> Tensor<f32, B, H, T, E> {
    matmul(
        softmax(causal(matmul(q, transpose(k, -1, -2)) * scale + mask), -1),
        v,
    )
}
