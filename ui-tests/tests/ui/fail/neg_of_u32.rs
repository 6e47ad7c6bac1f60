use mia_runtime::prelude::*;

#[kernel]
fn flip(x: Tensor<u32, N>) -> Tensor<u32, N> {
    -x
}

fn main() {}
