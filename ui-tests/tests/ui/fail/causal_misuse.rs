use mia_runtime::prelude::*;

// Integer scores, and a second argument: each call is reported at its own span.
#[kernel]
fn masked(x: Tensor<i32, T, S>, y: Tensor<f32, T, S>) -> (Tensor<i32, T, S>, Tensor<f32, T, S>) {
    (causal(x), causal(y, 1))
}

fn main() {}
