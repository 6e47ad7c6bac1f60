use mia_runtime::prelude::*;

#[kernel]
fn scale(x: Tensor<f32, N, D>) -> Tensor<f32, D, N> {
    x * 2.0
}

fn main() {}
