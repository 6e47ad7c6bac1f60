use mia_runtime::prelude::*;

#[kernel]
fn flatten(x: Tensor<f32, N, D>) -> Tensor<f32, N> {
    reshape(x, [N])
}

fn main() {}
