use mia_runtime::prelude::*;

#[kernel]
fn repeat(x: Tensor<f32, N>) -> Tensor<f32, N> {
    let y = x;
    for _ in 0..3 {
        y * 2.0;
    }
    y
}

fn main() {}
