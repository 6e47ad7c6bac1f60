use mia_runtime::prelude::*;

// Every function as a method, and the reductions along both axes.
#[kernel]
fn methods(x: Tensor<f32, N, D>) -> (Tensor<f32, N, D>, Tensor<f32, N, 1>, Tensor<f32, 1, D>) {
    let a = x.abs().sqrt().exp().ln() + x.tanh().sigmoid() - x.silu().gelu().gelu_tanh();
    let b = x.sin().cos().neg().relu() + x.rsqrt().abs().pow(2.0).maximum(x).minimum(x);
    (a + b, x.mean(-1) + x.min(1), x.max(0) - x.sum(0))
}

#[kernel]
fn functions(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    let a = ln(exp(abs(x))) + sqrt(abs(x)) + rsqrt(abs(x) + 1.0) + neg(tanh(x));
    let b = sigmoid(x) + relu(x) + gelu(x) + gelu_tanh(x) + silu(x) + sin(x) + cos(x);
    a + b + pow(abs(x), 0.5) + maximum(x, 0.0) + minimum(x, 0.0)
}

fn main() {
    let dev = Device::cpu();
    let x = Tensor::from_vec(&dev, [2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let (a, rows, cols) = methods(&x).unwrap();
    assert_eq!(a.shape(), &[2, 3]);
    assert_eq!(rows.shape(), &[2, 1]);
    assert_eq!(cols.shape(), &[1, 3]);
    let rows = rows.to_vec().unwrap();
    assert!(
        (rows[0] - 3.0).abs() < 1e-5,
        "mean + min of [1, 2, 3]: {}",
        rows[0]
    );
    assert_eq!(cols.to_vec().unwrap(), vec![-1.0, -2.0, -3.0]);
    assert_eq!(functions(&x).unwrap().shape(), &[2, 3]);
}
