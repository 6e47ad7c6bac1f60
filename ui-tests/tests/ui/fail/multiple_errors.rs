use mia_runtime::prelude::*;

#[kernel]
fn messy(x: Tensor<f32, N, D>, b: Tensor<f32, M>, ids: Tensor<i32, N>) -> Tensor<f32, N, D> {
    let a = x + b;
    let c = x + ids;
    let d = softplus(x);
    x
}

fn main() {}
