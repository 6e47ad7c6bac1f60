use mia_runtime::prelude::*;

#[kernel]
fn add(a: f32, b: f32) -> Tensor<f32> {
    a + b
}

fn main() {}
