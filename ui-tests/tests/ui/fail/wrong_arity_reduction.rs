use mia_runtime::prelude::*;

#[kernel]
fn total(x: Tensor<f32, N, D>) -> Tensor<f32, N, 1> {
    x.sum()
}

fn main() {}
