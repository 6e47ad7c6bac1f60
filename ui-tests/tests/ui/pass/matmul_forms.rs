use mia_runtime::prelude::*;

#[kernel]
fn linear_gelu(x: Tensor<f32, B, T, K>, w: Tensor<f32, K, N>, b: Tensor<f32, N>) -> Tensor<f32, B, T, N> {
    gelu(matmul(x, w) + b)
}

#[kernel]
fn scores(q: Tensor<f32, H, T, E>, k: Tensor<f32, H, S, E>, scale: f32) -> Tensor<f32, H, T, S> {
    matmul(q, transpose(k, -1, -2)) * scale
}

#[kernel]
fn gate(x: Tensor<f32, M, K>, w1: Tensor<f32, K, N>, w3: Tensor<f32, K, N>) -> Tensor<f32, M, N> {
    silu(matmul(x, w1)) * matmul(x, w3)
}

fn main() {
    assert_eq!(linear_gelu::plan().dispatches(), 1);
    assert_eq!(scores::plan().dispatches(), 1);
    assert_eq!(gate::plan().dispatches(), 1);
}
