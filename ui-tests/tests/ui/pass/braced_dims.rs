use mia_runtime::prelude::*;

// `H` is bound by `heads`, `D` by `x`; `{D / H}` is checked when the kernel is called.
#[kernel]
fn split_heads(x: Tensor<f32, T, D>, heads: Tensor<f32, H>) -> Tensor<f32, H, T, { D / H }> {
    let y = reshape(x, [T, H, { D / H }]);
    transpose(y, 0, 1)
}

#[kernel]
fn merge_heads(y: Tensor<f32, T, H, { D / H }>, w: Tensor<f32, D>) -> Tensor<f32, T, D> {
    reshape(y, [T, D]) * w
}

fn main() {
    let dev = Device::cpu();
    let x = Tensor::from_vec(&dev, [2, 4], (0..8).map(|v| v as f32).collect()).unwrap();
    let heads = Tensor::from_vec(&dev, [2], vec![0.0f32; 2]).unwrap();
    let y = split_heads(&x, &heads).unwrap();
    assert_eq!(y.shape(), &[2, 2, 2]);
    assert_eq!(
        y.to_vec().unwrap(),
        vec![0.0, 1.0, 4.0, 5.0, 2.0, 3.0, 6.0, 7.0]
    );
    let back = Tensor::from_vec(&dev, [2, 2, 2], (0..8).map(|v| v as f32).collect()).unwrap();
    let w = Tensor::from_vec(&dev, [4], vec![1.0f32, 1.0, 1.0, 2.0]).unwrap();
    let z = merge_heads(&back, &w).unwrap().to_vec().unwrap();
    assert_eq!(z, vec![0.0, 1.0, 2.0, 6.0, 4.0, 5.0, 6.0, 14.0]);
}
