use mia_runtime::prelude::*;

// Causal attention (one flash-attention pass) and `causal` on its own (a masking pass).
#[kernel]
fn decoder_attention(
    q: Tensor<f32, H, T, E>,
    k: Tensor<f32, H, S, E>,
    v: Tensor<f32, H, S, E>,
    scale: f32,
) -> Tensor<f32, H, T, E> {
    matmul(softmax(causal(matmul(q, transpose(k, -1, -2)) * scale), -1), v)
}

#[kernel]
fn causal_probs(x: Tensor<f32, B, T, S>) -> Tensor<f32, B, T, S> {
    softmax(causal(x) * 0.5, -1)
}

fn main() {
    assert_eq!(decoder_attention::plan().dispatches(), 1);
    assert_eq!(causal_probs::plan().dispatches(), 2);
}
