use mia_runtime::prelude::*;

#[kernel]
fn reduce_along(x: Tensor<f32, N, D>, axis: i32) -> Tensor<f32, N, 1> {
    x.sum(axis)
}

fn main() {}
