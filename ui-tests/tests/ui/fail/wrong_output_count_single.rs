use mia_runtime::prelude::*;

#[kernel]
fn pair(x: Tensor<f32, N>) -> Tensor<f32, N> {
    (relu(x), -x)
}

fn main() {}
