use mia_runtime::prelude::*;

#[kernel]
fn act(x: Tensor<f32, N>) -> Tensor<f32, N> {
    let y = x * 2.0;
    softplus(y) + 1.0
}

fn main() {}
