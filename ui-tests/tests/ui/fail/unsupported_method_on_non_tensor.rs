use mia_runtime::prelude::*;

#[kernel]
fn norm(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x / x.len()
}

fn main() {}
