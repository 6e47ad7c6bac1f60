use mia_runtime::prelude::*;

#[kernel]
fn ints(a: Tensor<i32, N>, b: Tensor<i32, N>, k: i32) -> Tensor<i32, N> {
    maximum(a * 2 - b, minimum(a, k)) + abs(-b)
}

#[kernel]
fn to_float(ids: Tensor<i32, N>, scale: f32) -> Tensor<f32, N> {
    cast::<f32>(ids) * scale
}

#[kernel]
fn indicator(x: Tensor<f32, N>) -> (Tensor<i32, N>, Tensor<u32, N>, Tensor<i32, 1>) {
    let pos = cast::<i32>(x > 0.0);
    (pos, cast::<u32>(x) + 1, pos.sum(0))
}

fn main() {
    let dev = Device::cpu();
    let a = Tensor::from_vec(&dev, [3], vec![1i32, -2, 5]).unwrap();
    let b = Tensor::from_vec(&dev, [3], vec![3i32, 4, -1]).unwrap();
    assert_eq!(ints(&a, &b, 2).unwrap().to_vec().unwrap(), vec![4, 2, 12]);
    assert_eq!(
        to_float(&a, 0.5).unwrap().to_vec().unwrap(),
        vec![0.5, -1.0, 2.5]
    );
    let x = Tensor::from_vec(&dev, [3], vec![-1.5f32, 2.0, 3.7]).unwrap();
    let (pos, u, count) = indicator(&x).unwrap();
    assert_eq!(pos.to_vec().unwrap(), vec![0, 1, 1]);
    assert_eq!(u.to_vec().unwrap()[1..], [3, 4]);
    assert_eq!(count.to_vec().unwrap(), vec![2]);
}
