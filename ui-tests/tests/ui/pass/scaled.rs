use mia_runtime::prelude::*;

#[kernel]
pub fn scaled(x: Tensor<f32, N>, alpha: f32) -> (Tensor<f32, N>, Tensor<f32, N>) {
    (x * alpha, relu(x) + 1.0)
}

fn main() {
    let dev = Device::cpu();
    let x = Tensor::from_vec(&dev, [3], vec![-1.0f32, 0.5, 2.0]).unwrap();
    let (a, b) = scaled(&x, 2.0).unwrap();
    assert_eq!(a.to_vec().unwrap(), vec![-2.0, 1.0, 4.0]);
    assert_eq!(b.to_vec().unwrap(), vec![1.0, 1.5, 3.0]);
}
