use mia_runtime::prelude::*;

#[kernel]
fn scores(q: Tensor<f32, B, T, E>, k: Tensor<f32, H, E, S>) -> Tensor<f32, B, T, S> {
    matmul(q, k)
}

fn main() {}
