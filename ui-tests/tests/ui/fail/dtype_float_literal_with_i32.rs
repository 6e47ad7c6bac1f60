use mia_runtime::prelude::*;

#[kernel]
fn halve(x: Tensor<i32, N>) -> Tensor<i32, N> {
    x * 0.5
}

fn main() {}
