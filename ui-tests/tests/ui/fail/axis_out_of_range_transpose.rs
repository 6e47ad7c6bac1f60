use mia_runtime::prelude::*;

#[kernel]
fn tr(x: Tensor<f32, N, D>) -> Tensor<f32, D, N> {
    transpose(x, 0, 2)
}

fn main() {}
