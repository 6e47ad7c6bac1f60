use mia_runtime::prelude::*;

#[kernel(fusion = false)]
fn unfused(x: Tensor<f32, N>, b: Tensor<f32, N>) -> Tensor<f32, N> {
    relu(x * 2.0 + b)
}

#[kernel(fusion = true)]
fn fused(x: Tensor<f32, N>, b: Tensor<f32, N>) -> Tensor<f32, N> {
    relu(x * 2.0 + b)
}

fn main() {
    let dev = Device::cpu();
    let x = Tensor::from_vec(&dev, [3], vec![-1.0f32, 0.0, 1.0]).unwrap();
    let b = Tensor::from_vec(&dev, [3], vec![1.0f32, 1.0, 1.0]).unwrap();
    assert_eq!(
        unfused(&x, &b).unwrap().to_vec().unwrap(),
        fused(&x, &b).unwrap().to_vec().unwrap()
    );
    assert_eq!(fused::plan().passes(), 1);
    assert!(unfused::plan().passes() > 1, "{:?}", unfused::plan());
}
