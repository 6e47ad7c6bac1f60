use mia_runtime::prelude::*;

#[kernel]
fn masked(x: Tensor<f32, S>) -> Tensor<f32, S> {
    softmax(causal(x), -1)
}

fn main() {}
