use mia_runtime::prelude::*;

#[kernel]
fn ids(x: Tensor<i32, N, K>, w: Tensor<f32, K, M>) -> Tensor<f32, N, M> {
    matmul(x, w)
}

fn main() {}
