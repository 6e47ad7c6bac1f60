use mia_runtime::prelude::*;

#[kernel]
fn act(x: Tensor<f32, N>) -> Tensor<f32, N> {
    exp::<f32>(x)
}

fn main() {}
