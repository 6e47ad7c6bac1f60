use mia_runtime::prelude::*;

#[kernel]
pub fn bias_gelu(x: Tensor<f32, N, D>, b: Tensor<f32, D>) -> Tensor<f32, N, D> {
    gelu(x + b)
}

fn main() {
    let dev = Device::cpu();
    let x = Tensor::from_vec(&dev, [2, 3], vec![0.0f32, 1.0, -1.0, 2.0, 0.5, -0.5]).unwrap();
    let b = Tensor::from_vec(&dev, [3], vec![0.0f32, 0.0, 1.0]).unwrap();
    let y: Tensor<f32> = bias_gelu(&x, &b).unwrap();
    assert_eq!(y.shape(), &[2, 3]);
    let host = y.to_vec().unwrap();
    assert!((host[0] - 0.0).abs() < 1e-6);
    assert!((host[1] - 0.841_344_7).abs() < 1e-4, "{}", host[1]);
}
