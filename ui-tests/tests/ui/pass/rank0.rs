use mia_runtime::prelude::*;

// `Tensor<f32>` is rank 0: one value that broadcasts against anything.
#[kernel]
fn scale_by(s: Tensor<f32>, x: Tensor<f32, N>) -> (Tensor<f32, N>, Tensor<f32>) {
    (x * s, exp(s) - 1.0)
}

fn main() {
    let dev = Device::cpu();
    let s = Tensor::scalar(&dev, 3.0f32).unwrap();
    let x = Tensor::from_vec(&dev, [2], vec![1.0f32, 2.0]).unwrap();
    let (y, e) = scale_by(&s, &x).unwrap();
    assert_eq!(y.to_vec().unwrap(), vec![3.0, 6.0]);
    assert!(e.shape().is_empty());
    assert!((e.to_vec().unwrap()[0] - (3.0f32.exp() - 1.0)).abs() < 1e-3);
}
