use mia_runtime::prelude::*;

#[kernel]
fn add_ids(x: Tensor<f32, N>, ids: Tensor<i32, N>) -> Tensor<f32, N> {
    x + ids
}

fn main() {}
