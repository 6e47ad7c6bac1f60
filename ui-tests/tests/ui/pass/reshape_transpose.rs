use mia_runtime::prelude::*;

#[kernel]
fn flatten(x: Tensor<f32, N, D>) -> Tensor<f32, { N * D }> {
    reshape(x, [{ N * D }])
}

#[kernel]
fn tr(x: Tensor<f32, B, N, D>) -> Tensor<f32, B, D, N> {
    transpose(x, -1, -2) * 2.0
}

#[kernel]
fn rows_of_four(x: Tensor<f32, N, 8>) -> Tensor<f32, N, 2, 4> {
    reshape(x, [N, 2, 4])
}

fn main() {
    let dev = Device::cpu();
    let x = Tensor::from_vec(&dev, [2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let f = flatten(&x).unwrap();
    assert_eq!(f.shape(), &[6]);
    let x3 = Tensor::from_vec(&dev, [1, 2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let t = tr(&x3).unwrap();
    assert_eq!(t.shape(), &[1, 3, 2]);
    assert_eq!(t.to_vec().unwrap(), vec![2.0, 8.0, 4.0, 10.0, 6.0, 12.0]);
    let r = Tensor::from_vec(&dev, [1, 8], vec![0.0f32; 8]).unwrap();
    assert_eq!(rows_of_four(&r).unwrap().shape(), &[1, 2, 4]);
}
