use mia_runtime::prelude::*;

#[kernel]
fn mix(a: Tensor<f32, N, 3>, b: Tensor<f32, N, 4>) -> Tensor<f32, N, 3> {
    a * b
}

fn main() {}
