use mia_runtime::prelude::*;

#[kernel]
fn exp_ids(ids: Tensor<i32, N>) -> Tensor<i32, N> {
    exp(ids)
}

fn main() {}
