use mia_runtime::prelude::*;

#[kernel]
fn split(x: Tensor<f32, N>) -> (Tensor<f32, N>, Tensor<f32, N>) {
    relu(x)
}

fn main() {}
