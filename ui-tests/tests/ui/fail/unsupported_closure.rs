use mia_runtime::prelude::*;

#[kernel]
fn apply(x: Tensor<f32, N>) -> Tensor<f32, N> {
    let f = |v| v * 2.0;
    x + 1.0
}

fn main() {}
