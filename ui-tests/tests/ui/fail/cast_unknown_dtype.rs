use mia_runtime::prelude::*;

#[kernel]
fn to_double(x: Tensor<f32, N>) -> Tensor<f32, N> {
    cast::<f64>(x)
}

fn main() {}
