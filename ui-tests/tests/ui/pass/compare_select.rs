use mia_runtime::prelude::*;

#[kernel]
fn leaky(x: Tensor<f32, N>, slope: f32) -> Tensor<f32, N> {
    select(x > 0.0, x, x * slope)
}

#[kernel]
fn compare(
    a: Tensor<f32, N>,
    b: Tensor<f32, N>,
) -> (Tensor<bool, N>, Tensor<bool, N>, Tensor<f32, N>) {
    let ge = a >= b;
    let ne = a != b;
    (ge, (a < b) == (a <= b), select(ne, a - b, 0.0))
}

fn main() {
    let dev = Device::cpu();
    let x = Tensor::from_vec(&dev, [3], vec![-2.0f32, 0.0, 3.0]).unwrap();
    assert_eq!(
        leaky(&x, 0.5).unwrap().to_vec().unwrap(),
        vec![-1.0, 0.0, 3.0]
    );
    let b = Tensor::from_vec(&dev, [3], vec![0.0f32, 0.0, 0.0]).unwrap();
    let (ge, same, diff) = compare(&x, &b).unwrap();
    assert_eq!(ge.to_vec().unwrap(), vec![false, true, true]);
    assert_eq!(same.to_vec().unwrap(), vec![true, false, true]);
    assert_eq!(diff.to_vec().unwrap(), vec![-2.0, 0.0, 3.0]);
}
