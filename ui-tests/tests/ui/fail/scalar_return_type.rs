use mia_runtime::prelude::*;

#[kernel]
fn total(x: Tensor<f32, N>) -> f32 {
    x.sum(0)
}

fn main() {}
