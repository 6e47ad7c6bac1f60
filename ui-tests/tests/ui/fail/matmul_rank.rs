use mia_runtime::prelude::*;

#[kernel]
fn dot(x: Tensor<f32, K>, w: Tensor<f32, K, M>) -> Tensor<f32, M> {
    matmul(x, w)
}

fn main() {}
