use mia_runtime::prelude::*;

#[kernel]
fn act(x: Tensor<f32, N>) -> Tensor<f32, N> {
    tanh(x, 2.0)
}

fn main() {}
