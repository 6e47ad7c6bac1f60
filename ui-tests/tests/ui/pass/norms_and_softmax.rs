use mia_runtime::prelude::*;

#[kernel]
fn block(
    x: Tensor<f32, N, D>,
    r: Tensor<f32, N, D>,
    g: Tensor<f32, D>,
    b: Tensor<f32, D>,
    eps: f32,
) -> Tensor<f32, N, D> {
    let h = layer_norm(x + r, g, b, eps);
    softmax(h, -1) + softmax(h, 0)
}

fn main() {
    let dev = Device::cpu();
    let x = Tensor::from_vec(&dev, [2, 2], vec![1.0f32, 3.0, 2.0, 2.0]).unwrap();
    let r = Tensor::from_vec(&dev, [2, 2], vec![0.0f32; 4]).unwrap();
    let g = Tensor::from_vec(&dev, [2], vec![1.0f32, 1.0]).unwrap();
    let b = Tensor::from_vec(&dev, [2], vec![0.0f32, 0.0]).unwrap();
    let y = block(&x, &r, &g, &b, 1e-5).unwrap().to_vec().unwrap();
    assert_eq!(y.len(), 4);
    assert!(y.iter().all(|v| v.is_finite()));
}
