use mia_runtime::prelude::*;

#[kernel]
fn twice(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x * 2.0;
    x
}

fn main() {}
