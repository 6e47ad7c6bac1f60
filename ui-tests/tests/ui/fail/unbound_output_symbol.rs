use mia_runtime::prelude::*;

#[kernel]
fn widen(x: Tensor<f32, N>) -> Tensor<f32, N, M> {
    x
}

fn main() {}
