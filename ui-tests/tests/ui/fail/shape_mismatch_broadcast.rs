use mia_runtime::prelude::*;

#[kernel]
fn add_rows(x: Tensor<f32, N, D>, b: Tensor<f32, M>) -> Tensor<f32, N, D> {
    x + b
}

fn main() {}
