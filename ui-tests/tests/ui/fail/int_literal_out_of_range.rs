use mia_runtime::prelude::*;

#[kernel]
fn big(ids: Tensor<i32, N>) -> Tensor<i32, N> {
    ids + 3000000000
}

fn main() {}
