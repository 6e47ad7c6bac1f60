use mia_runtime::prelude::*;

#[kernel]
fn shift(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x + 1.0f32
}

fn main() {}
