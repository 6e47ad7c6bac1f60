use mia_runtime::prelude::*;

#[kernel]
fn count_band(x: Tensor<f32, N>) -> Tensor<bool, N> {
    (x > 0.0) + (x < 1.0)
}

fn main() {}
