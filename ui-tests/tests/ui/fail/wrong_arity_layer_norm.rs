use mia_runtime::prelude::*;

#[kernel]
fn norm(x: Tensor<f32, N, D>, gamma: Tensor<f32, D>, eps: f32) -> Tensor<f32, N, D> {
    layer_norm(x, gamma, eps)
}

fn main() {}
