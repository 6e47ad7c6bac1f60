use mia_runtime::prelude::*;

#[kernel]
fn debug(x: Tensor<f32, N>) -> Tensor<f32, N> {
    let y = dbg!(x * 2.0);
    y
}

fn main() {}
