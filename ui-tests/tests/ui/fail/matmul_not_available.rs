use mia_runtime::prelude::*;

#[kernel]
fn linear(x: Tensor<f32, N, K>, w: Tensor<f32, K, M>) -> Tensor<f32, N, M> {
    matmul(x, w)
}

fn main() {}
