use mia_runtime::prelude::*;

#[kernel]
fn double<T>(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x * 2.0
}

fn main() {}
