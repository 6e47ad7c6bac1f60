use mia_runtime::prelude::*;

#[kernel]
fn col_sum(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    x - x.sum(2)
}

fn main() {}
