use mia_runtime::prelude::*;

#[kernel]
fn first(x: Tensor<f32, N, D>) -> Tensor<f32, D> {
    x[0]
}

fn main() {}
