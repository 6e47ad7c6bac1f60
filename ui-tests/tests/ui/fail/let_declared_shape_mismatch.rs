use mia_runtime::prelude::*;

// A declared type is checked: the sum over the last axis keeps it as size 1.
#[kernel]
fn act(x: Tensor<f32, N, D>) -> Tensor<f32, N, 1> {
    let y: Tensor<f32, N, D> = x.sum(-1);
    y
}

fn main() {}
