use mia_runtime::prelude::*;

#[kernel]
fn pair(x: Tensor<f32, N>) -> Tensor<f32, N> {
    let p = (x, x);
    x
}

fn main() {}
