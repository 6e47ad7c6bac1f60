use mia_runtime::prelude::*;

#[kernel]
fn probs(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    softmax(x)
}

fn main() {}
