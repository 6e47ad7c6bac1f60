use mia_runtime::prelude::*;

#[kernel]
fn gate(x: Tensor<f32, N>, mask: Tensor<f32, N>) -> Tensor<f32, N> {
    select(mask, x, 0.0)
}

fn main() {}
