use mia_runtime::prelude::*;

#[kernel]
fn clamp_low(x: Tensor<f32, N>) -> Tensor<f32, N> {
    maximum(x)
}

fn main() {}
