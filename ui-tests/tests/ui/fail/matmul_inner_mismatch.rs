use mia_runtime::prelude::*;

#[kernel]
fn linear(x: Tensor<f32, N, K>, w: Tensor<f32, D, M>) -> Tensor<f32, N, M> {
    matmul(x, w) + 1.0
}

fn main() {}
