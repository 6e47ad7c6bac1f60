use mia_runtime::prelude::*;

#[kernel]
fn act(x: Tensor<f32, N>) -> Tensor<f32, N> {
    let y: Tensor<f32, N> = exp(x);
    y
}

fn main() {}
