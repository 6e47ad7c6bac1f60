use mia_runtime::prelude::*;

#[kernel]
fn positive(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x > 0.0
}

fn main() {}
