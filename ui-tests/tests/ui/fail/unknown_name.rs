use mia_runtime::prelude::*;

#[kernel]
fn shift(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x + bias
}

fn main() {}
