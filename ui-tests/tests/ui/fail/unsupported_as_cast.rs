use mia_runtime::prelude::*;

#[kernel]
fn to_float(ids: Tensor<i32, N>) -> Tensor<f32, N> {
    ids as f32
}

fn main() {}
